"""Vectorised centroid maths — no per-class or per-pixel Python loops.

* `class_mean_vectors`: for every image b and class c, the mean feature over pixels where both label maps
  say c (e.g. pseudo-label and prediction), if at least `min_pixels` pixels agree.
* `sequential_ema`: the reference's sequence of updates μ_c ← (1−m)·μ_c + m·v, applied in order, in closed form.
* `nearest_centroid_*`: softmax over negative Euclidean distances to the centroids, up-sampled, argmax.

All of them run in float32 with autocast off (`float32_math`), whatever precision the training step uses: per-class
sums over many pixels overflow fp16, and the distance expansion ‖f‖² + ‖μ‖² − 2 f·μ cancels to noise in bf16.
None of them waits for the device (no `.item()`, no boolean indexing): they run inside every self-training step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diga.pseudo_labels.selection import downsample_labels
from diga.utils.precision import float32_math


@float32_math
def class_mean_vectors(feat: torch.Tensor, labels: torch.Tensor, num_classes: int, pred: torch.Tensor | None = None,
                       min_pixels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per-image class means.

    Args:
        feat: B×D×h×w features.
        labels: B×h×w class ids (255 = none) at feature resolution.
        pred: optional B×h×w second label map; a pixel counts for class c only where `labels == pred == c`.
    Returns:
        vectors B×C×D (zero where invalid) and valid B×C (≥ `min_pixels` pixels and a non-zero-sum vector,
        as the reference skips vectors whose elements sum to exactly 0).
    """
    b, d = feat.shape[:2]
    lab = labels.reshape(b, 1, -1)
    classes = torch.arange(num_classes, device=feat.device).view(1, -1, 1)
    member = lab == classes  # B×C×P; 255 and out-of-range ids match no class
    if pred is not None:
        member &= pred.reshape(b, 1, -1) == lab
    onehot = member.to(feat.dtype)
    counts = onehot.sum(-1)  # B×C
    # one batched matmul (C×P)·(P×D) reads the feature map once; BLAS handles the transposed operand
    sums = torch.bmm(onehot, feat.reshape(b, d, -1).transpose(1, 2))
    vectors = sums / counts.clamp(min=1).unsqueeze(-1)
    valid = (counts >= min_pixels) & (vectors.sum(-1) != 0)
    return vectors * valid.unsqueeze(-1), valid


def ordered_class_vectors(
    feats: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    preds: Sequence[torch.Tensor],
    num_classes: int,
    min_pixels: int = 5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image class means of several (features, labels, predictions) groups, in the reference's update order:
    group by group, image-major, class-minor. Labels may be at a finer resolution than the features (nearest
    down-sampling). Returns (classes n, vectors n×D, valid n) over all (image, class) pairs.
    """
    vecs, valid = [], []
    for f, lab, pred in zip(feats, labels, preds):
        lab = downsample_labels(lab, f.shape[-2:])
        v, ok = class_mean_vectors(f, lab, num_classes, pred, min_pixels)
        vecs.append(v.flatten(0, 1))
        valid.append(ok.flatten())
    vectors, ok = torch.cat(vecs), torch.cat(valid)
    classes = torch.arange(num_classes, device=vectors.device).repeat(vectors.shape[0] // num_classes)
    return classes, vectors, ok


@float32_math
def sequential_ema(
    centroids: torch.Tensor,
    classes: torch.Tensor,
    vectors: torch.Tensor,
    momentum: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply μ_{c_j} ← (1−m)·μ_{c_j} + m·v_j for j = 1..n *in order*, vectorised.

    For class c with k updates: μ_c ← (1−m)^k μ_c + m Σ_j (1−m)^{k−j} v_j, where k−j counts the later updates
    of the same class. Rows j with `valid[j]` false are not updates (a mask instead of `classes[valid]`, which would
    wait for the device to count them). Returns the new C×D tensor (the input is not modified).
    """
    if classes.numel() == 0:
        return centroids.clone()
    num_classes = centroids.shape[0]
    onehot = F.one_hot(classes.long(), num_classes).to(centroids.dtype)  # n×C
    if valid is not None:
        onehot = onehot * valid.to(centroids.dtype).unsqueeze(1)
    later = onehot.flip(0).cumsum(0).flip(0) - onehot  # later updates of the same class, per row
    later_j = (later * onehot).sum(1)  # n
    weight = momentum * (1 - momentum) ** later_j * onehot.sum(1)  # 0 for rows that are not updates
    k = onehot.sum(0)  # C
    added = torch.zeros_like(centroids).index_add_(0, classes.long(), vectors * weight.unsqueeze(1))
    return centroids * ((1 - momentum) ** k).unsqueeze(1) + added


@float32_math
def nearest_centroid_probs(feat: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """B×C×h×w softmax over classes of −‖f − μ_c‖₂ (REF `feat_centroid_distance` + softmax)."""
    b, d, h, w = feat.shape
    f = feat.reshape(b, d, h * w)
    mu = centroids
    # ‖f − μ‖² = ‖f‖² + ‖μ‖² − 2 f·μ: one matmul, no B×P×D transpose copy
    # (C×D)·(B×D×P) as a broadcast matmul: 2× faster than the equivalent einsum on CPU (measured, benchmarks/)
    sq = (f * f).sum(1, keepdim=True) + (mu * mu).sum(1)[None, :, None] - 2 * torch.matmul(mu, f)
    dist = sq.clamp_(min=0).sqrt_()
    return F.softmax(-dist, dim=1).reshape(b, -1, h, w)


@float32_math
def nearest_centroid_labels(feat: torch.Tensor, centroids: torch.Tensor, out_size: Sequence[int],
                            align_corners: bool = True) -> torch.Tensor:  # fmt: skip
    """REF order: up-sample the soft centroid weights (bilinear) to `out_size`, then argmax."""
    probs = nearest_centroid_probs(feat, centroids)
    if tuple(probs.shape[-2:]) != tuple(out_size):
        probs = F.interpolate(probs, size=tuple(out_size), mode="bilinear", align_corners=align_corners)
    return probs.argmax(1)
