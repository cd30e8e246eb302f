"""Symmetric cross-view distillation, computed in float32 whatever the precision of the logits (`float32_math`):
softmax and log-softmax of bf16 logits lose the small probabilities the distillation transfers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diga.data.labels import IGNORE_INDEX
from diga.utils.precision import float32_math


@float32_math
def soft_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                       valid: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """mean over pixels of −Σ_c q_c · log softmax(z)_c (no temperature); `valid` (B×H×W) masks pixels out."""
    per_pixel = -(teacher_probs * F.log_softmax(student_logits, dim=1)).sum(dim=1)
    if valid is None:
        return per_pixel.mean()
    return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


@float32_math
def symmetric_distillation(student_orig: torch.Tensor, student_mixed: torch.Tensor, teacher_orig: torch.Tensor,
                           teacher_mixed: torch.Tensor, reverse_weight: float = 0.5,
                           labels: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """teacher(original) → student(mixed) + `reverse_weight` · teacher(mixed) → student(original).

    Teacher logits are detached here. REF averages over all pixels, void included; pass `labels` to mask
    void pixels out (the `loss.kd.mask_void` variant). REF weights: s = 0.5 (GTA, DG, semi), 0.25 (SYNTHIA).
    """
    q_o = F.softmax(teacher_orig.detach(), dim=1)
    q_m = F.softmax(teacher_mixed.detach(), dim=1)
    valid = None if labels is None else (labels != IGNORE_INDEX).float()
    return soft_cross_entropy(student_mixed, q_o, valid) + reverse_weight * soft_cross_entropy(student_orig, q_m, valid)
