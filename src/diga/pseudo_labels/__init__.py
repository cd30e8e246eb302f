"""Pseudo-label selection: bilateral consensus (DiGA) and the fixed-threshold baseline."""

from diga.pseudo_labels.selection import bilateral_consensus, confidence_threshold, downsample_labels

__all__ = ["bilateral_consensus", "confidence_threshold", "downsample_labels"]
