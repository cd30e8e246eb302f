"""The warm-up's second view (cross-domain mixture, CrDoMix) as a pure function of its ingredients."""

from __future__ import annotations

import torch

from diga.mixing.class_mask import sample_class_masks
from diga.mixing.mix import mix_images


def second_view(augmented: torch.Tensor, translated: torch.Tensor, labels: torch.Tensor, num_classes: int,
                generator: torch.Generator | None = None, crdomix: bool = True,
                has_translation: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """x̃ and the class mask used (None when nothing was mixed).

    CrDoMix (default): half of each image's classes (void always) keep the photometric view A(x), the others take
    the translated T(x): x̃ = (1 − M)·T(x) + M·A(x). Without a translator (domain generalisation, semi-supervised)
    x̃ = A(x); with `crdomix=False` x̃ = T(x).
    """
    if not has_translation:
        return (augmented if crdomix else translated), None
    if not crdomix:
        return translated, None
    mask = sample_class_masks(labels, num_classes, generator)
    return mix_images(translated, augmented, mask), mask
