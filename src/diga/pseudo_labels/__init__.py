"""Pseudo-label selection: bilateral consensus (DiGA) and the fixed-threshold baseline."""

from diga.pseudo_labels.selection import (
    PL_SELECTIONS,
    bilateral_consensus,
    classwise_thresholds,
    confidence_threshold,
    downsample_labels,
    per_class_selection_stats,
    select_pseudo_labels,
)

__all__ = ["PL_SELECTIONS", "bilateral_consensus", "classwise_thresholds", "confidence_threshold", "downsample_labels",
           "per_class_selection_stats", "select_pseudo_labels"]  # fmt: skip
