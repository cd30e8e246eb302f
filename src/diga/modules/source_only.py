"""Stage `source_only`: supervised training on the labelled source domain — the adaptation baseline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diga.losses import build_seg_loss
from diga.models.segmentor import SegOutput
from diga.modules.base import SegmentationModule, upsample


class SourceOnlyModule(SegmentationModule):
    """`L = seg_loss(student(x_s), y_s) [+ λ_FD · FD]`, logits up-sampled to the crop before the loss.

    Args:
        seg_loss: `{kind: ce, normalization: all_pixels|valid}` or `{kind: ohem, thresh, min_kept}` (conf/loss/).
        feature_distance: DAFormer's thing-class ImageNet feature distance on the source images, `{weight: λ
            (0 = off; DAFormer 0.005), scale_min_ratio: 0.75, things_only: true}`; the frozen reference encoder is
            built from the model config as initialised from ImageNet (`model.pretrained`).
    """

    def __init__(self, *args: Any, seg_loss: Mapping[str, Any] | None = None,
                 feature_distance: Mapping[str, Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self._seg_loss = build_seg_loss(seg_loss)
        fd = dict(feature_distance or {})
        self.feature_distance = None
        if float(fd.get("weight", 0.0)) > 0:
            from diga.modules.base import build_model
            from diga.uda import ImageNetFeatureDistance, thing_classes

            imagenet = build_model({**dict(self.hparams.model), "weights": None}).backbone
            classes = thing_classes(self.labels) if fd.get("things_only", True) else None
            weight, ratio = float(fd["weight"]), float(fd.get("scale_min_ratio", 0.75))
            self.feature_distance = ImageNetFeatureDistance(imagenet, self.model.num_classes, classes, weight, ratio)

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.feature_distance] if self.feature_distance is not None else []

    def fd_loss(self, x: torch.Tensor, out: SegOutput, y: torch.Tensor) -> torch.Tensor | None:
        """λ_FD · the thing-class distance of the student's last encoder stage to the ImageNet encoder's (or None)."""
        if self.feature_distance is None or out.encoder is None:
            return None
        b = x.shape[0]
        return self.feature_distance(self.model.normalize(x), out.encoder[-1][:b], y)

    def seg_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._seg_loss(logits, target)

    def supervised_loss(self, out: SegOutput, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """seg(logits, y) + aux_weight · seg(aux logits, y) for heads with auxiliary logits (OCR); `weight` (B×H×W)
        weights every pixel (confidence-weighted pseudo-labels; cross-entropy losses only)."""
        size, ac = target.shape[-2:], self.model.align_corners
        kw = {} if weight is None else {"weight": weight}
        loss = self._seg_loss(upsample(out.logits, size, ac), target, **kw)
        if out.aux is not None:
            loss = loss + self.hparams.aux_weight * self._seg_loss(upsample(out.aux, size, ac), target, **kw)
        return loss

    def step_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        src = batch["source"]
        x, y = self.prep(src["image"]), src["label"]
        out = self.model(x)
        loss_src = self.supervised_loss(out, y)
        fd = self.fd_loss(x, out, y)
        losses = {"loss": loss_src if fd is None else loss_src + fd, "loss_src": loss_src}
        return losses if fd is None else {**losses, "loss_fd": fd}
