"""Stage `source_only`: supervised training on the labelled source domain — the adaptation baseline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diga.losses import build_seg_loss
from diga.models.segmentor import SegOutput
from diga.modules.base import SegmentationModule, upsample


class SourceOnlyModule(SegmentationModule):
    """`L = seg_loss(student(x_s), y_s)`, logits up-sampled to the crop before the loss.

    Args:
        seg_loss: `{kind: ce, normalization: all_pixels|valid}` or `{kind: ohem, thresh, min_kept}` (conf/loss/).
    """

    def __init__(self, *args: Any, seg_loss: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seg_loss = build_seg_loss(seg_loss)

    def seg_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._seg_loss(logits, target)

    def supervised_loss(self, out: SegOutput, target: torch.Tensor) -> torch.Tensor:
        """seg(logits, y) + aux_weight · seg(aux logits, y) for heads with auxiliary logits (OCR)."""
        size, ac = target.shape[-2:], self.model.align_corners
        loss = self.seg_loss(upsample(out.logits, size, ac), target)
        if out.aux is not None:
            loss = loss + self.hparams.aux_weight * self.seg_loss(upsample(out.aux, size, ac), target)
        return loss

    def step_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        src = batch["source"]
        x, y = self.prep(src["image"]), src["label"]
        loss = self.supervised_loss(self.model(x), y)
        return {"loss": loss, "loss_src": loss}
