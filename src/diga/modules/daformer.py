"""Stage `daformer`: DAFormer's (and, with masked consistency, MIC's) self-training — a baseline in the same harness.

Per step: EMA teacher update (α_i = min(1 − 1/(i+1), 0.999)) → supervised loss on the source crop (+ the thing-class
ImageNet feature distance) → the teacher's pseudo-label of the target crop, every pixel weighted by the fraction of
confident pixels (≥ 0.968) → class-mix of source classes onto the target (DACS), colour-jittered and blurred → the
weighted cross-entropy on the mixed image (→ MIC: the student on a block-masked target image against the same
pseudo-label). No translator, no distillation, no centroids: what DiGA adds is the difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diga.augment import PhotometricAugment
from diga.data.samplers import step_seed
from diga.mixing import mix_images, mix_labels, sample_class_masks
from diga.models.ema import EMATeacher
from diga.modules.source_only import SourceOnlyModule
from diga.uda import BlockMaskGenerator, confidence_weighted_pseudo_labels, mask_images, masked_consistency_loss


class DAFormerModule(SourceOnlyModule):
    """Args (beyond SourceOnlyModule, which brings `feature_distance`):
    ema: kwargs of `EMATeacher` (DAFormer: decay 0.999, the reciprocal ramp, the teacher in eval mode).
    photometric: the strong augmentation of the mixed image (DACS: colour jitter 0.2 with p 0.2, Gaussian blur).
    pseudo_threshold: the confidence of a "confident" pixel (0.968).
    mix_weight: weight of the class-mix loss.
    masked_consistency: MIC, `{weight: λ (0 = DAFormer, 1 = MIC), mask_ratio: 0.7, block_size: 64}`.
    mask_seed: seed of the class-mix and block-mask draws (with the step and rank).
    """

    def __init__(self, *args: Any, ema: Mapping[str, Any] | None = None,
                 photometric: Mapping[str, Any] | None = None, pseudo_threshold: float = 0.968,
                 mix_weight: float = 1.0, masked_consistency: Mapping[str, Any] | None = None, mask_seed: int = 0,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.teacher = EMATeacher(self.model, **dict(ema or {}))
        self.photometric = PhotometricAugment(**{"beta": 1.0, **dict(photometric or {})})
        mic = dict(masked_consistency or {})
        self.mic_weight = float(mic.get("weight", 0.0))
        self.mask_generator = BlockMaskGenerator(float(mic.get("mask_ratio", 0.7)), int(mic.get("block_size", 64)))
        self._generator: torch.Generator | None = None

    grad_forwards_per_image = 3  # source, class-mix (and the masked target with MIC)

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.teacher, *super().frozen_modules()]

    def step_generator(self) -> torch.Generator:
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        seed = step_seed(int(self.hparams.mask_seed), int(self.global_step), int(self.global_rank))
        return self._generator.manual_seed(seed % 2**63)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self.teacher.update(self.model, int(self.global_step))

    def step_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        src, tgt = batch["source"], batch["target"]
        xs, ys, xt = self.prep(src["image"]), src["label"], self.prep(tgt["image"])
        size, ac = ys.shape[-2:], self.model.align_corners
        gen = self.step_generator()

        out_s = self.model(xs)
        loss_src = self.supervised_loss(out_s, ys)
        losses: dict[str, torch.Tensor] = {"loss_src": loss_src}
        fd = self.fd_loss(xs, out_s, ys)
        if fd is not None:
            losses["loss_fd"] = fd

        pl = confidence_weighted_pseudo_labels(self.teacher(xt).logits, self.hparams.pseudo_threshold, size=size,
                                               align_corners=ac)  # fmt: skip
        mask = sample_class_masks(ys, self.model.num_classes, gen)
        x_mix = self.photometric(mix_images(xt, xs, mask))
        y_mix = mix_labels(pl.label, ys, mask)
        w_mix = mix_labels(pl.weight, torch.ones_like(pl.weight), mask)
        losses["loss_mix"] = self.hparams.mix_weight * self.supervised_loss(self.model(x_mix), y_mix, w_mix)
        if self.mic_weight > 0:
            keep = self.mask_generator(xt, gen)
            masked = mask_images(self.photometric(xt), keep, fill=self.model.normalize.mean.view(-1))
            losses["loss_mic"] = masked_consistency_loss(self.model(masked).logits, pl.label, pl.weight,
                                                         self.mic_weight, ac)  # fmt: skip
        losses["pl_confident"] = pl.weight.mean()
        return {"loss": sum(v for k, v in losses.items() if k != "pl_confident"), **losses}
