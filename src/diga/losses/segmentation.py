"""Supervised segmentation losses, computed in float32 whatever the precision of the logits (`float32_math`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diga.data.labels import IGNORE_INDEX
from diga.utils.precision import float32_math


@float32_math
def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, normalization: str = "valid", weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Pixel-wise CE with 255 ignored.

    normalization:
        "valid": mean over labelled pixels (`F.cross_entropy(ignore_index=255)`);
        "all_pixels": sum over labelled pixels / number of *all* pixels — the reference's `CE_ref`, where the
            labelled fraction acts as an implicit weight (e.g. on pseudo-labels with many rejected pixels).
    `weight` (B×H×W) optionally weights every pixel.
    """
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    if weight is not None:
        per_pixel = per_pixel * weight
    if normalization == "all_pixels":
        return per_pixel.sum() / per_pixel.numel()
    if normalization == "valid":
        return per_pixel.sum() / (target != IGNORE_INDEX).sum().clamp(min=1)
    raise ValueError(f"unknown CE normalization {normalization!r} (valid | all_pixels)")


@float32_math
def ohem_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7, min_kept: int = 100_000
) -> torch.Tensor:
    """Online hard example mining CE (REF SYNTHIA).

    Among labelled pixels, the threshold is τ = max(p_sorted[min(min_kept, n_valid − 1)], thresh) on the
    ascending GT-class probabilities; the loss is the mean CE over labelled pixels with p < τ (0 when none).
    Computed with masks and a gathered index, so it never waits for the device to count pixels.
    """
    valid = target != IGNORE_INDEX
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    with torch.no_grad():
        prob = torch.where(valid, torch.exp(-per_pixel), torch.full_like(per_pixel, float("inf")))  # void sorts last
        sorted_p = prob.flatten().sort().values
        k = (valid.sum().clamp(max=min_kept + 1) - 1).clamp(min=0)  # min(min_kept, n_valid − 1)
        tau = sorted_p.gather(0, k.view(1)).clamp(min=thresh)  # inf when nothing is labelled: keeps nothing
        keep = valid & (prob < tau)
    return (per_pixel * keep).sum() / keep.sum().clamp(min=1)
