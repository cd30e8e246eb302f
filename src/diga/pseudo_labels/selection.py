"""Which target pixels get a pseudo-label (METHOD.md §7.4). Pure functions on label maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diga.data.labels import IGNORE_INDEX


def bilateral_consensus(offline: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
    """Keep a pixel's offline pseudo-label only where the nearest-centroid label agrees; 255 elsewhere.

    No threshold anywhere: the selection is *dynamic* because the centroid label comes from the current EMA
    teacher's features and the current centroids.
    """
    return torch.where(offline == centroid, offline, torch.full_like(offline, IGNORE_INDEX))


PL_SELECTIONS = ("consensus", "offline", "centroid")


def select_pseudo_labels(offline: torch.Tensor, centroid: torch.Tensor, mode: str = "consensus") -> torch.Tensor:
    """Self-training's target labels: `consensus` (DiGA), `offline` (the offline pseudo-labels as they are — with a
    thresholded pseudo-label stage this is the fixed-threshold baseline) or `centroid` (nearest-centroid only)."""
    if mode == "consensus":
        return bilateral_consensus(offline, centroid)
    if mode == "offline":
        return offline
    if mode == "centroid":
        return centroid
    raise ValueError(f"pseudo-label selection must be one of {PL_SELECTIONS}, got {mode!r}")


def confidence_threshold(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """The fixed-threshold baseline: argmax where max softmax probability ≥ threshold, else 255."""
    conf, label = probs.max(1)
    return torch.where(conf >= threshold, label, torch.full_like(label, IGNORE_INDEX))


def downsample_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest down-sampling of B×H×W label maps (REF: labels to feature resolution for centroid updates)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels.unsqueeze(1).float(), size=tuple(size), mode="nearest").squeeze(1).long()
