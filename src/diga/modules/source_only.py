"""Stage `source_only`: supervised training on the labelled source domain — the adaptation baseline."""

from __future__ import annotations

from typing import Any

import torch

from diga.losses import cross_entropy, ohem_cross_entropy
from diga.modules.base import SegmentationModule, upsample


class SourceOnlyModule(SegmentationModule):
    """`L = CE(student(x_s), y_s)` (or OHEM), logits up-sampled to the crop before the loss.

    Args:
        seg_loss: "ce" or "ohem".
        ce_normalization: "valid" (standard) or "all_pixels" (the reference's CE_ref).
    """

    def __init__(self, *args: Any, seg_loss: str = "ce", ce_normalization: str = "valid", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    def seg_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.seg_loss == "ohem":
            return ohem_cross_entropy(logits, target)
        return cross_entropy(logits, target, self.hparams.ce_normalization)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        src = batch["source"]
        x, y = self.prep(src["image"]), src["label"]
        logits = upsample(self.model(x).logits, y.shape[-2:], self.model.align_corners)
        loss = self.seg_loss(logits, y)
        self.log_losses({"loss": loss, "loss_src": loss}, batch_size=x.shape[0])
        return loss
