"""DAFormer's (DACS') confidence-weighted pseudo-labels: every target pixel gets the teacher's argmax, and the loss
weight of all of them is the share of pixels the teacher is confident about — no pixel is thrown away, a batch the
teacher is unsure about simply counts less.

    ŷ = argmax softmax(z),   q = |{pixels: max softmax(z) ≥ τ}| / |pixels|,   w = q everywhere,   τ = 0.968.

As in DAFormer, q is one number for the whole batch (the "pixels" are all B×H×W, every pixel counts, there is no
ignore in the pseudo-label); `per_image=True` computes it per image instead. Then the weight — not q — is zeroed
in the top `ignore_top` and bottom `ignore_bottom` rows (DAFormer's "pseudo-label crop" against rectification
artifacts and the ego car; its GTA→Cityscapes config uses 15 and 120 rows of the 512×512 crop) and multiplied by
an optional per-pixel `valid_mask` (MIC's margins mask; MIC does not allow combining it with the row crop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

DAFORMER_PSEUDO_THRESHOLD = 0.968


class PseudoLabels(NamedTuple):
    label: torch.Tensor  # B×H×W int64, the teacher's argmax (no ignore)
    weight: torch.Tensor  # B×H×W float32 per-pixel loss weight


@torch.no_grad()
def confidence_weighted_pseudo_labels(
    teacher_logits: torch.Tensor,
    threshold: float = DAFORMER_PSEUDO_THRESHOLD,
    ignore_top: int = 0,
    ignore_bottom: int = 0,
    valid_mask: torch.Tensor | None = None,
    per_image: bool = False,
    size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> PseudoLabels:
    """(pseudo-label, weight) from B×C×h×w teacher logits; see the module docstring.

    `size` (H, W) first bilinearly resizes the logits (DAFormer's `encode_decode` returns them at input size).
    Confidence is `max softmax ≥ threshold` (DAFormer uses `ge`). Softmax is taken in float32.
    """
    if valid_mask is not None and (ignore_top > 0 or ignore_bottom > 0):
        raise ValueError("combine either the row crop (ignore_top/ignore_bottom) or a valid_mask, not both (as MIC)")
    logits = teacher_logits.detach().float()
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)
    prob, label = torch.softmax(logits, dim=1).max(dim=1)
    confident = prob >= threshold
    if per_image:
        q = confident.flatten(1).sum(1).double() / confident[0].numel()
        weight = q.float().view(-1, 1, 1).expand_as(prob).clone()
    else:
        q = confident.sum().double() / confident.numel()
        weight = torch.full_like(prob, 1.0) * q.float()
    if ignore_top > 0:
        weight[:, :ignore_top, :] = 0
    if ignore_bottom > 0:
        weight[:, -ignore_bottom:, :] = 0
    if valid_mask is not None:
        weight = weight * (valid_mask.squeeze(1) if valid_mask.dim() == 4 else valid_mask).to(weight.dtype)
    return PseudoLabels(label, weight)
