"""Vectorised method ops vs the reference's per-class / per-image Python loops, timed in the same run."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import torch

from diga.centroids import class_mean_vectors, nearest_centroid_probs, sequential_ema
from diga.mixing import sample_class_masks


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


# --- naive re-implementations of the reference code (METHOD.md §17.21), kept here only to be measured against ----
def naive_class_means_and_update(feat: torch.Tensor, labels: torch.Tensor, pred: torch.Tensor, mu: torch.Tensor,
                                 m: float, min_pixels: int = 5) -> torch.Tensor:  # fmt: skip
    """REF `calculate_mean_vector` + `update_objective_SingleVector`: loops over images and classes, `.item()` syncs."""
    mu = mu.clone()
    for b in range(feat.shape[0]):
        for c in range(mu.shape[0]):
            mask = ((labels[b] == c) & (pred[b] == c)).float()
            if mask.sum().item() < min_pixels:
                continue
            v = (feat[b] * mask).sum((-2, -1)) / mask.sum()
            if v.sum().item() == 0:
                continue
            mu[c] = (1 - m) * mu[c] + m * v
    return mu


def naive_centroid_distance(feat: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """REF `feat_centroid_distance`: one expand + norm per class."""
    d = [torch.norm(feat - mu[c].view(1, -1, 1, 1).expand_as(feat), 2, dim=1) for c in range(mu.shape[0])]
    return torch.softmax(-torch.stack(d, 1), dim=1)


def naive_class_masks(labels: torch.Tensor) -> torch.Tensor:
    """REF: per image `torch.unique().tolist()`, `random.sample`, then one comparison per selected class."""
    out = torch.zeros_like(labels, dtype=torch.bool)
    for b in range(labels.shape[0]):
        values = torch.unique(labels[b]).tolist()
        chosen = random.sample(values, len(values) // 2)
        if 255 not in chosen:
            chosen.append(255)
        for c in chosen:
            out[b] |= labels[b] == c
    return out


def run(device: str = "cpu") -> list[dict[str, object]]:
    """REF sizes: 3 crops, 256-d features at 65×113 (512×896 input, stride 8), 19 classes, labels at 512×896."""
    torch.manual_seed(0)
    b, d, h, w, c = 3, 256, 65, 113, 19
    feat = torch.randn(b, d, h, w, device=device)
    labels = torch.randint(0, c, (b, h, w), device=device)
    pred = torch.where(torch.rand(b, h, w) < 0.7, labels, torch.randint(0, c, (b, h, w)))
    mu = torch.randn(c, d, device=device)
    big_labels = torch.randint(0, c, (b, 512, 896))
    big_labels[:, :50] = 255
    g = torch.Generator().manual_seed(0)

    def vec_update() -> torch.Tensor:
        v, ok = class_mean_vectors(feat, labels, c, pred, 5)
        classes = torch.arange(c).repeat(b)
        return sequential_ema(mu, classes[ok.flatten()], v.flatten(0, 1)[ok.flatten()], 1e-4)

    # correctness first: the vectorised ops compute what the loops compute
    torch.testing.assert_close(vec_update(), naive_class_means_and_update(feat, labels, pred, mu, 1e-4), atol=1e-5,
                               rtol=1e-5)  # fmt: skip
    torch.testing.assert_close(
        nearest_centroid_probs(feat, mu), naive_centroid_distance(feat, mu), atol=1e-5, rtol=1e-4
    )

    rows = []
    for name, fast, slow in [
        ("centroid means + EMA update (3×256×65×113, 19 cl.)", vec_update,
         lambda: naive_class_means_and_update(feat, labels, pred, mu, 1e-4)),
        ("nearest-centroid softmax (3×256×65×113, 19 cl.)", lambda: nearest_centroid_probs(feat, mu),
         lambda: naive_centroid_distance(feat, mu)),
        ("half-class masks (3×512×896)", lambda: sample_class_masks(big_labels, c, g),
         lambda: naive_class_masks(big_labels)),
    ]:  # fmt: skip
        t_fast, t_slow = timeit(fast), timeit(slow)
        rows.append({"op": name, "vectorised_ms": 1000 * t_fast, "loop_ms": 1000 * t_slow, "speedup": t_slow / t_fast})
    return rows
