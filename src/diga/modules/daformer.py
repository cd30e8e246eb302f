"""Stage `daformer`: DAFormer's (and, with masked consistency, MIC's) self-training — a baseline in the same harness.

Per step: EMA teacher update (α_i = min(1 − 1/(i+1), 0.999)) → supervised loss on the source crop (+ the thing-class
ImageNet feature distance) → the teacher's pseudo-label of the target crop, every pixel weighted by the fraction of
confident pixels (≥ 0.968) → class-mix of source classes onto the target (DACS), colour-jittered and blurred → the
weighted cross-entropy on the mixed image (→ MIC: the student on a block-masked target image against the same
pseudo-label). No translator, no distillation, no centroids: what DiGA adds is the difference.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from diga.augment import PhotometricAugment
from diga.mixing import mix_images, mix_labels, sample_class_masks
from diga.models.ema import EMATeacher
from diga.modules.source_only import SourceOnlyModule
from diga.uda import (
    MaskedImageConsistency,
    PseudoLabels,
    confidence_weighted_pseudo_labels,
    masked_consistency_loss,
)
from diga.utils.rng import step_generator


class DAFormerModule(SourceOnlyModule):
    """Args (beyond SourceOnlyModule, which brings `feature_distance`):
    ema: kwargs of `EMATeacher` (DAFormer: decay 0.999, the reciprocal ramp, the teacher in eval mode).
    photometric: the strong augmentation of the mixed image (DACS: colour jitter 0.2 with p 0.2, Gaussian blur).
    pseudo_threshold: the confidence of a "confident" pixel (0.968).
    mix_weight: weight of the class-mix loss.
    masked_consistency: MIC, `{weight: λ (0 = DAFormer, 1 = MIC), mask_ratio: 0.7, block_size: 64}`.
    mask_seed: seed of the class-mix and block-mask draws (with the step and rank).
    sequential_backward: back-propagate the source, class-mix and MIC losses one after the other, as DAFormer
        does: the same gradient, with one forward pass's activations held at a time instead of all of them.
    """

    def __init__(self, *args: Any, ema: Mapping[str, Any] | None = None,
                 photometric: Mapping[str, Any] | None = None, pseudo_threshold: float = 0.968,
                 mix_weight: float = 1.0, masked_consistency: Mapping[str, Any] | None = None, mask_seed: int = 0,
                 sequential_backward: bool = True, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        if sequential_backward:
            self.automatic_optimization = False  # training_step back-propagates each of loss_phases
        self.teacher = EMATeacher(self.model, **dict(ema or {}))
        self.photometric = PhotometricAugment(**{"beta": 1.0, **dict(photometric or {})})
        self.mic = MaskedImageConsistency(**dict(masked_consistency or {}))
        self._generator: torch.Generator | None = None

    @property
    def grad_forwards_per_image(self) -> int:  # type: ignore[override]
        """Student forwards whose activations are held at once: one with sequential backward, else all of them."""
        return 1 if self.hparams.sequential_backward else 2 + int(self.mic.enabled)

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.teacher, *super().frozen_modules()]

    def teacher_images(self, source_images: int, target_images: int) -> int:
        return target_images  # the pseudo-label forward of the target crops

    @property
    def student_forwards_before_teacher(self) -> int:  # type: ignore[override]
        """The source pass's graph: freed by its backward pass with `sequential_backward`, else still alive."""
        return 0 if self.hparams.sequential_backward else 1

    def step_generator(self) -> torch.Generator:
        """The mask RNG, reseeded from (mask_seed, step, rank) at every call (diga.utils.rng)."""
        self._generator = step_generator(self.device, int(self.hparams.mask_seed), int(self.global_step),
                                         int(self.global_rank), self._generator)  # fmt: skip
        return self._generator

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self.teacher.update(self.model, int(self.global_step))

    def loss_phases(self, batch: dict[str, Any]) -> Iterator[dict[str, torch.Tensor]]:
        """One group per forward pass with `sequential_backward`, else all of them summed (also with micro-batches)."""
        if self.hparams.sequential_backward:
            yield from self.forward_passes(batch)
        else:
            yield self.step_losses(batch)

    def loss_phase_count(self) -> int:
        return (2 + int(self.mic.enabled)) if self.hparams.sequential_backward else 1

    def forward_passes(self, batch: dict[str, Any]) -> Iterator[dict[str, torch.Tensor]]:
        """Source (+ feature distance), then class-mix, then MIC: DAFormer back-propagates each before the next."""
        src, tgt = batch["source"], batch["target"]
        xs, ys, xt = self.prep(src["image"]), src["label"], self.prep(tgt["image"])
        size, ac = ys.shape[-2:], self.model.align_corners
        gen = self.step_generator()

        loss_src, _, out_s = self.segmentation_pass(xs, ys, generator=gen)
        source = {"loss_src": loss_src}
        fd = self.fd_loss(xs, out_s, ys)
        if fd is not None:
            source["loss_fd"] = fd
        yield {"loss": sum(source.values()), **source}
        del out_s  # with sequential backward, its graph was freed by the backward pass above

        with torch.no_grad():
            teacher_logits = self.teacher(xt).logits
        pl = confidence_weighted_pseudo_labels(teacher_logits, self.hparams.pseudo_threshold, size=size,
                                               align_corners=ac, valid_mask=tgt.get("valid_pseudo_mask"))  # fmt: skip
        mask = sample_class_masks(ys, self.model.num_classes, gen)
        x_mix = self.photometric(mix_images(xt, xs, mask))
        y_mix = mix_labels(pl.label, ys, mask)
        w_mix = mix_labels(pl.weight, torch.ones_like(pl.weight), mask)
        loss_mix = self.hparams.mix_weight * self.segmentation_pass(x_mix, y_mix, w_mix, gen).loss
        yield {"loss": loss_mix, "loss_mix": loss_mix, "pl_confident": pl.weight.mean()}
        if self.mic.enabled:
            loss_mic = self.masked_consistency(xt, pl, gen)
            yield {"loss": loss_mic, "loss_mic": loss_mic}

    def masked_consistency(self, xt: torch.Tensor, pl: PseudoLabels, generator: torch.Generator) -> torch.Tensor:
        """MIC on the target crop (`diga.uda.MaskedImageConsistency`), shared with DiGA's self-training; with HRDA
        the masked view goes through the multi-resolution training pass and its loss, as in MIC(HRDA)."""
        fill = self.model.normalize.mean.view(-1)
        masked = self.mic.masked_view(xt, self.photometric, fill, generator)
        out = self.model.forward_train(masked, generator=generator)
        if out.detail is None:  # one resolution: MIC's own loss (weighted CE averaged over every pixel)
            return masked_consistency_loss(out.logits, pl.label, pl.weight, self.mic.weight, self.model.align_corners)
        return self.mic.weight * self.pass_loss(out, pl.label, pl.weight)

    def step_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """All forward passes' losses summed into one backward pass (`sequential_backward=false`)."""
        merged: dict[str, torch.Tensor] = {}
        for losses in self.forward_passes(batch):
            for k, v in losses.items():
                merged[k] = merged[k] + v if k in merged else v
        return merged
