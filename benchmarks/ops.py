"""Vectorised method ops vs the reference's per-class / per-image Python loops, timed in the same run."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import torch

from benchmarks.device import sync
from diga.centroids import class_mean_vectors, nearest_centroid_probs, sequential_ema
from diga.mixing import sample_class_masks


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median seconds per call (CUDA work is waited for: the loops' syncs are part of their cost, not ours)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


# --- naive re-implementations of the reference code, kept here only to be measured against ----
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


SIZES = {
    # REF GTA self-training: 3 crops 512×896, DeepLabV2 256-d features at stride 8, 19 classes
    "REF": {"b": 3, "d": 256, "h": 65, "w": 113, "c": 19, "label_hw": (512, 896)},
    # the toy benchmark: batch 8, 64×128 crops, SegFormer-B0 256-d features at stride 4, 7 classes
    "toy": {"b": 8, "d": 256, "h": 16, "w": 32, "c": 7, "label_hw": (64, 128)},
}


def run(device: str = "cpu") -> list[dict[str, object]]:
    rows = []
    for size_name, size in SIZES.items():
        rows += _run_size(size_name, device=device, **size)
    return rows


def _run_size(size_name: str, b: int, d: int, h: int, w: int, c: int, label_hw: tuple[int, int],
              device: str) -> list[dict[str, object]]:  # fmt: skip
    torch.manual_seed(0)
    random.seed(0)
    feat = torch.randn(b, d, h, w, device=device)
    labels = torch.randint(0, c, (b, h, w), device=device)
    pred = torch.where(torch.rand(b, h, w, device=device) < 0.7, labels, torch.randint(0, c, (b, h, w), device=device))
    mu = torch.randn(c, d, device=device)
    big_labels = torch.randint(0, c, (b, *label_hw), device=device)
    big_labels[:, : label_hw[0] // 10] = 255
    g = torch.Generator(device=device).manual_seed(0)

    def vec_update() -> torch.Tensor:
        v, ok = class_mean_vectors(feat, labels, c, pred, 5)
        classes = torch.arange(c, device=device).repeat(b)
        return sequential_ema(mu, classes[ok.flatten()], v.flatten(0, 1)[ok.flatten()], 1e-4)

    # correctness first: the vectorised ops compute what the loops compute
    torch.testing.assert_close(vec_update(), naive_class_means_and_update(feat, labels, pred, mu, 1e-4), atol=1e-5,
                               rtol=1e-5)  # fmt: skip
    torch.testing.assert_close(
        nearest_centroid_probs(feat, mu), naive_centroid_distance(feat, mu), atol=1e-5, rtol=1e-4
    )

    fs, ls = f"{b}×{d}×{h}×{w}, {c} cl.", f"{b}×{label_hw[0]}×{label_hw[1]}"
    rows = []
    for name, fast, slow in [
        (f"centroid means + EMA update ({fs})", vec_update,
         lambda: naive_class_means_and_update(feat, labels, pred, mu, 1e-4)),
        (f"nearest-centroid softmax ({fs})", lambda: nearest_centroid_probs(feat, mu),
         lambda: naive_centroid_distance(feat, mu)),
        (f"half-class masks ({ls})", lambda: sample_class_masks(big_labels, c, g),
         lambda: naive_class_masks(big_labels)),
    ]:  # fmt: skip
        t_fast, t_slow = timeit(fast, repeat=11), timeit(slow, repeat=11)
        rows.append({"size": size_name, "device": device, "op": f"[{size_name}] {name}", "vectorised_ms": 1000 * t_fast,
                     "loop_ms": 1000 * t_slow, "speedup": t_slow / t_fast})  # fmt: skip
    return rows
