"""Initial centroids from a dataset (stage `centroids`) and their file format (atomic writes)."""

from __future__ import annotations

from pathlib import Path

import torch

from diga.centroids.ops import class_mean_vectors
from diga.models.weights import WeightFileError
from diga.utils.atomic_checkpoints import atomic_torch_save


class CentroidAccumulator:
    """Exact mean of per-image class-mean vectors (REF 'mean' update, one pass).

    The reference runs 5 identical passes of a running mean capped at 3000 samples; for datasets with fewer than
    3000 images per class, one pass of the exact mean gives the same result at a fifth of the cost.
    """

    def __init__(self, num_classes: int, feat_dim: int, min_pixels: int = 5) -> None:
        self.sums = torch.zeros(num_classes, feat_dim, dtype=torch.float64)
        self.counts = torch.zeros(num_classes, dtype=torch.long)
        self.min_pixels = min_pixels

    def update(self, feat: torch.Tensor, labels: torch.Tensor) -> None:
        vectors, valid = class_mean_vectors(feat, labels, self.sums.shape[0], min_pixels=self.min_pixels)
        self.sums += (vectors * valid.unsqueeze(-1)).sum(0).double().cpu()
        self.counts += valid.sum(0).cpu()

    def merge(self, other: CentroidAccumulator) -> None:
        self.sums += other.sums
        self.counts += other.counts

    def centroids(self) -> torch.Tensor:
        """C×D float32; classes never seen stay at 0 (REF initial value)."""
        return (self.sums / self.counts.clamp(min=1).unsqueeze(1)).float()


def reference_running_mean(vectors: torch.Tensor, valid: torch.Tensor, passes: int = 5,
                           sample_cap: int = 3000) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The authors' initial centroids, exactly: their running 'mean' update replayed `passes` times over the
    per-image class vectors in dataset order (image-major, class-minor), the sample count capped at `sample_cap`.

    μ_c ← (μ_c·n_c + v)/(n_c + 1), n_c ← min(n_c + 1, cap), in float32 as they compute it. The passes repeat the same
    vectors (the model is in eval mode), so they are replayed instead of recomputed. With fewer than `sample_cap`
    images per class this equals the exact mean up to float rounding; beyond it, late images weigh more.

    Args:
        vectors: N×C×D per-image class means; valid: N×C (≥ min_pixels pixels and a non-zero-sum vector).
    Returns:
        (C×D centroids, C sample counts after the last pass).
    """
    n_img, num_classes, dim = vectors.shape
    mu = torch.zeros(num_classes, dim, dtype=torch.float32)
    count = torch.zeros(num_classes, dtype=torch.float32)
    vectors, valid = vectors.float().cpu(), valid.cpu()
    for _ in range(passes):
        for i in range(n_img):
            m = valid[i]
            if not bool(m.any()):
                continue
            mu[m] = (mu[m] * count[m, None] + vectors[i, m]) / (count[m] + 1)[:, None]
            count[m] = (count[m] + 1).clamp(max=sample_cap)
    return mu, count.long()


def save_centroids(path: str | Path, centroids: torch.Tensor, counts: torch.Tensor, label_set: str) -> None:
    atomic_torch_save({"centroids": centroids.cpu(), "counts": counts.cpu(), "label_set": label_set}, path)


def load_centroids(path: str | Path, num_classes: int, feat_dim: int) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: centroid file not found (run stage=centroids first)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightFileError(f"{path}: cannot read centroid file ({type(e).__name__}: {e})") from e
    c = obj.get("centroids") if isinstance(obj, dict) else obj
    if not isinstance(c, torch.Tensor) or c.shape != (num_classes, feat_dim):
        shape = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
        raise WeightFileError(f"{path}: centroids have shape {shape}, the model needs ({num_classes}, {feat_dim})")
    return c.float()
