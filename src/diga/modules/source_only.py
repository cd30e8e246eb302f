"""Stage `source_only`: supervised training on the labelled source domain — the adaptation baseline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from diga.losses import build_seg_loss
from diga.models.hrda import multi_resolution_loss
from diga.models.segmentor import SegOutput, TrainingPass
from diga.modules.base import SegmentationModule, upsample


class SegmentationPass(NamedTuple):
    loss: torch.Tensor  # the supervised loss
    logits: torch.Tensor  # the prediction (HRDA: fused) at the head's output stride
    features: SegOutput  # what the feature distance and the centroids read (HRDA: the context pass)


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
        """λ_FD · the thing-class distance of the student's last encoder stage to the ImageNet encoder's (or None);
        with HRDA on the context pass (`out` is then the context's output), as HRDA does."""
        if self.feature_distance is None or out.encoder is None:
            return None
        b, seen = x.shape[0], self.model.features_view(self.model.normalize(x))
        return self.feature_distance(seen, out.encoder[-1][:b], y)

    def pixel_loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The stage's segmentation loss on logits up-sampled to the label (`weight`: B×H×W per-pixel weights)."""
        kw = {} if weight is None else {"weight": weight}
        return self._seg_loss(upsample(logits, target.shape[-2:], self.model.align_corners), target, **kw)

    def segmentation_pass(self, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                          generator: torch.Generator | None = None) -> SegmentationPass:  # fmt: skip
        """One training forward pass on `x` with its supervised loss.

        One resolution: `supervised_loss(model(x))`. HRDA (`diga.models.hrda`): the context and a detail window
        drawn from `generator`, `(1 − λ_d)·loss(fused) + λ_d·loss(detail)`; `features` is then the context pass.
        """
        out = self.model.forward_train(x, generator=generator)
        return SegmentationPass(self.pass_loss(out, target, weight), out.logits, out.features)

    def pass_loss(self, out: TrainingPass, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The supervised loss of one training pass: `loss(logits)` (+ aux_weight · loss(aux) for heads with auxiliary
        logits); HRDA: `(1 − λ_d)·loss(fused) + λ_d·loss(detail window)`."""
        if out.detail is None:
            return self.supervised_loss(out.features, target, weight)
        return multi_resolution_loss(self.pixel_loss, out.logits, out.detail, target, out.detail_box,
                                     self.model.detail_loss_weight, weight)  # fmt: skip

    def seg_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._seg_loss(logits, target)

    def supervised_loss(self, out: SegOutput, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """seg(logits, y) + aux_weight · seg(aux logits, y) for heads with auxiliary logits (OCR); `weight` (B×H×W)
        weights every pixel (confidence-weighted pseudo-labels; cross-entropy losses only)."""
        loss = self.pixel_loss(out.logits, target, weight)
        if out.aux is not None:
            loss = loss + self.hparams.aux_weight * self.pixel_loss(out.aux, target, weight)
        return loss

    def step_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        src = batch["source"]
        x, y = self.prep(src["image"]), src["label"]
        loss_src, _, out = self.segmentation_pass(x, y)
        fd = self.fd_loss(x, out, y)
        losses = {"loss": loss_src if fd is None else loss_src + fd, "loss_src": loss_src}
        return losses if fd is None else {**losses, "loss_fd": fd}
