"""Segmentation losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from diga.losses import cross_entropy, ohem_cross_entropy


def _logits_for(probs: list[list[float]]) -> torch.Tensor:
    """Pixels × classes probabilities → 1×C×1×P logits."""
    return torch.tensor(probs).log().T.reshape(1, len(probs[0]), 1, len(probs))


def test_ce_valid_vs_all_pixels_normalisation() -> None:
    logits = _logits_for([[0.5, 0.5], [0.25, 0.75], [0.9, 0.1], [0.5, 0.5]])
    target = torch.tensor([[[0, 1, 255, 255]]])
    nll = -math.log(0.5) - math.log(0.75)
    assert cross_entropy(logits, target, "valid").item() == pytest.approx(nll / 2, rel=1e-6)
    # REF CE_ref: divide by all 4 pixels, ignored ones included
    assert cross_entropy(logits, target, "all_pixels").item() == pytest.approx(nll / 4, rel=1e-6)


def test_ce_all_ignored_is_zero_not_nan() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = cross_entropy(logits, torch.full((1, 2, 2), 255), "valid")
    assert loss.item() == 0.0
    loss.backward()


def test_ohem_keeps_hard_pixels_only() -> None:
    # GT-class probabilities 0.9, 0.6, 0.3, 0.8; thresh 0.7, min_kept 1 → τ = max(p_sorted[1]=0.6, 0.7) = 0.7
    logits = _logits_for([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    target = torch.tensor([[[0, 0, 0, 0]]])
    loss = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=1)
    assert loss.item() == pytest.approx((-math.log(0.6) - math.log(0.3)) / 2, rel=1e-6)
    # min_kept large → τ = max(p_sorted[n-1]=0.9, 0.7) = 0.9: pixels with p < 0.9
    loss = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=100)
    assert loss.item() == pytest.approx((-math.log(0.6) - math.log(0.3) - math.log(0.8)) / 3, rel=1e-6)
