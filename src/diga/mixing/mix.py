"""Pixel-wise mixing of two images (and their labels) under a mask."""

from __future__ import annotations

import torch


def mix_images(background: torch.Tensor, foreground: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(1 − M) ⊙ background + M ⊙ foreground`; `mask` is B×H×W (bool or float), broadcast over channels.

    CrDoMix: background = translated source, foreground = photometrically augmented source.
    Class-mix: background = augmented target, foreground = source.
    """
    m = mask.unsqueeze(1).to(background.dtype)
    return background * (1 - m) + foreground * m


def mix_labels(background: torch.Tensor, foreground: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Labels of a mixed image: the foreground's where pasted (its 255 included), else the background's."""
    return torch.where(mask.bool(), foreground, background)
