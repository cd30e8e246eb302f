"""Which target pixels get a pseudo-label. Pure functions on label maps."""

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


PL_SELECTIONS = ("consensus", "offline", "centroid", "daformer")


def select_pseudo_labels(offline: torch.Tensor, centroid: torch.Tensor, mode: str = "consensus") -> torch.Tensor:
    """Self-training's target labels: `consensus` (DiGA), `offline` (the offline pseudo-labels as they are — with a
    thresholded pseudo-label stage this is the fixed-threshold baseline) or `centroid` (nearest-centroid only)."""
    if mode == "consensus":
        return bilateral_consensus(offline, centroid)
    if mode == "offline":
        return offline
    if mode == "centroid":
        return centroid
    if mode == "daformer":
        raise ValueError(
            "pl_selection=daformer labels come from the teacher (diga.uda.confidence_weighted_pseudo_labels)"
        )
    raise ValueError(f"pseudo-label selection must be one of {PL_SELECTIONS}, got {mode!r}")


def per_class_selection_stats(offline: torch.Tensor, selected: torch.Tensor, num_classes: int,
                              truth: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Per class c: `kept` = fraction of the offline pseudo-label's c-pixels that the selection keeps; with ground
    truth, `precision` = fraction of selected c-pixels whose true class is c (NaN where nothing was selected).
    Diagnostics only — they say which classes a selection rule starves or gets wrong."""
    classes = torch.arange(num_classes, device=offline.device).view(-1, 1)
    off = offline.reshape(1, -1) == classes  # C×P
    sel = selected.reshape(1, -1) == classes
    n_off, n_sel = off.sum(1).float(), sel.sum(1).float()
    nan = torch.full_like(n_off, float("nan"))
    out = {"kept": torch.where(n_off > 0, (off & sel).sum(1).float() / n_off.clamp(min=1), nan)}
    if truth is not None:
        right = (sel & (truth.reshape(1, -1) == classes)).sum(1).float()
        out["precision"] = torch.where(n_sel > 0, right / n_sel.clamp(min=1), nan)
    return out


def confidence_threshold(probs: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """The fixed-threshold baselines: argmax where the max softmax probability ≥ the threshold, else 255.
    `threshold` is one number, or one per class (C,) applied to each pixel's predicted class."""
    conf, label = probs.max(1)
    thr = threshold[label] if isinstance(threshold, torch.Tensor) else threshold
    return torch.where(conf >= thr, label, torch.full_like(label, IGNORE_INDEX))


def classwise_thresholds(histograms: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Per-class thresholds that keep the `keep_fraction` most confident pixels predicted as each class (CBST's
    class-balanced selection), from C×bins histograms of the max probability on [0, 1]."""
    bins = histograms.shape[1]
    # probability mass at or above each bin edge, per class
    above = histograms.flip(1).cumsum(1).flip(1).double()
    total = histograms.sum(1, keepdim=True).double().clamp(min=1)
    ok = above / total >= keep_fraction  # bins whose lower edge still keeps ≥ keep_fraction of the class
    idx = (ok.double() * torch.arange(bins, dtype=torch.float64, device=histograms.device)).argmax(1)  # highest bin
    return idx.float() / bins


def downsample_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest down-sampling of B×H×W label maps (REF: labels to feature resolution for centroid updates)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels.unsqueeze(1).float(), size=tuple(size), mode="nearest").squeeze(1).long()
