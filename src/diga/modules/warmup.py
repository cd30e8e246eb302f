"""Stage `warmup`: distillation warm-up with the cross-domain mixture. Only source labels are used.

Per step (the reference's order): EMA update of the teacher (start of step) → photometric view A(x) → translated
view T(x) → half-class mask M → CrDoMix x̃ = (1−M)·T(x) + M·A(x) → one student and one teacher forward on
cat(x, x̃) → L = seg(student(x), y) + λ_KD · [KD(teacher(x) → student(x̃)) + s · KD(teacher(x̃) → student(x))].
Without a translator (domain generalisation, semi-supervised) the second view is A(x).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diga.augment import PhotometricAugment
from diga.evaluation.visualize import log_views
from diga.losses import symmetric_distillation
from diga.mixing import second_view
from diga.models.ema import EMATeacher
from diga.models.hrda import multi_resolution_loss
from diga.modules.base import upsample
from diga.modules.contract import StageInput, file_input
from diga.modules.source_only import SourceOnlyModule
from diga.translation import build_translator
from diga.utils.rng import step_generator


class WarmupModule(SourceOnlyModule):
    """Args (beyond SourceOnlyModule):
    translator: `{kind: learned|fourier|color|none, checkpoint, fourier_beta}` (conf/translator/).
    crdomix: mix translated and augmented source by half-class masks (else the second view is T(x) or A(x)).
    photometric: kwargs of `PhotometricAugment` (β, op probabilities, space; conf/photometric/).
    ema: kwargs of `EMATeacher` (decay, ramp, mode, buffers; conf/ema/).
    kd_weight / kd_reverse_weight: λ_KD and s (the authors' GTA values 0.5 / 0.5; SYNTHIA 0.25 / 0.25).
    kd_mask_void: exclude void pixels from the distillation (the authors: false).
    mask_seed: seed of the class-mask draws (with the step and rank).
    """

    def __init__(self, *args: Any, translator: Mapping[str, Any] | None = None, crdomix: bool = True,
                 photometric: Mapping[str, Any] | None = None, ema: Mapping[str, Any] | None = None,
                 kd_weight: float = 0.5, kd_reverse_weight: float = 0.5, kd_mask_void: bool = False,
                 mask_seed: int = 0, log_views_every_n_steps: int = 0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.teacher = EMATeacher(self.model, **dict(ema or {}))
        self.translator = build_translator(**dict(translator or {}))
        self.photometric = PhotometricAugment(**dict(photometric or {}))
        self._generator: torch.Generator | None = None
        self._generator_step = -1

    grad_forwards_per_image = 2  # cat(x, x̃)
    # the authors' order: the student's forward, then the teacher's (a train-mode teacher draws its dropout after the
    # student's, so the order is part of the results)
    student_forwards_before_teacher = 2

    def teacher_images(self, source_images: int, target_images: int) -> int:
        return 2 * source_images  # cat(x, x̃)

    @classmethod
    def declared_inputs(cls, stage: Mapping[str, Any]) -> list[StageInput]:
        """Besides the model's weights, the learned translator's checkpoint (the other kinds read no file)."""
        translator = dict(stage.get("module", {}).get("translator") or {})
        learned = translator.get("kind") == "learned"
        checkpoint = file_input(
            "earlier output",
            "image translator",
            translator.get("checkpoint") if learned else None,
            "stage.module.translator.checkpoint",
            "translator.pt of a stage=translator run",
        )
        return [*super().declared_inputs(stage), *checkpoint]

    def frozen_modules(self) -> list[torch.nn.Module]:
        return [self.teacher, self.translator, *super().frozen_modules()]

    @property
    def generator(self) -> torch.Generator:
        """RNG for class-mask draws: reseeded every step from (mask_seed, step, rank), so a resumed run draws the
        same masks as an uninterrupted one."""
        stale = self._generator is None or self._generator.device != self.device
        if stale or self._generator_step != self.global_step:
            self._generator = step_generator(self.device, int(self.hparams.mask_seed), int(self.global_step),
                                             int(self.global_rank), self._generator)  # fmt: skip
            self._generator_step = int(self.global_step)
        return self._generator

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self.teacher.update(self.model, int(self.global_step))  # start of step, from the pre-step student

    def views(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The second view x̃ and its ingredients (A(x), T(x), mask) for logging."""
        aug = self.photometric(x)
        translated = self.translator(x, target)
        mixed, mask = second_view(aug, translated, y, self.model.num_classes, self.generator, self.hparams.crdomix,
                                  has_translation=self.translator.translates)  # fmt: skip
        out = {"aug": aug, "translated": translated, "mixed": mixed}
        return out if mask is None else {**out, "mask": mask}

    def distillation(self, z_s: torch.Tensor, z_t: torch.Tensor, b: int, y: torch.Tensor) -> torch.Tensor:
        """Symmetric KD between the first `b` (original view) and the last `b` (second view) images."""
        return symmetric_distillation(z_s[:b], z_s[b:], z_t[:b], z_t[b:], self.hparams.kd_reverse_weight,
                                      labels=y if self.hparams.kd_mask_void else None)  # fmt: skip

    def source_branch(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> dict[str, Any]:
        """The warm-up on one source batch: both views through student and teacher, seg + distillation losses.

        Self-training runs exactly this for its source half and reuses the teacher outputs.
        """
        views = self.views(x, y, target)
        both = torch.cat([x, views["mixed"]])
        b, size, ac = x.shape[0], y.shape[-2:], self.model.align_corners
        # HRDA: one detail window for both views, so that they stay pixel-aligned
        train = self.model.forward_train(both, generator=self.generator)
        student = train.features
        teacher = self.teacher(both)  # HRDA: the teacher's full multi-resolution prediction (detail everywhere)
        z_s = upsample(train.logits, size, ac)
        z_t = upsample(teacher.logits, size, ac)
        detail = train.detail[:b] if train.detail is not None else None
        # on the logits already up-sampled for the distillation: one up-sampling, one gradient path
        loss_seg = multi_resolution_loss(self.pixel_loss, z_s[:b], detail, y, train.detail_box,
                                         self.model.detail_loss_weight)  # fmt: skip
        loss_kd = self.distillation(z_s, z_t, b, y)
        if student.aux is not None:  # OCR: the auxiliary logits get both terms at aux_weight
            a_s, a_t = upsample(student.aux, size, ac), upsample(teacher.aux, size, ac)
            loss_seg = loss_seg + self.hparams.aux_weight * self.seg_loss(a_s[:b], y)
            loss_kd = loss_kd + self.hparams.aux_weight * self.distillation(a_s, a_t, b, y)
        fd = self.fd_loss(x, student, y)  # on the original view (the first b images)
        return {"views": views, "student_logits": z_s, "teacher": teacher, "loss_seg": loss_seg, "loss_kd": loss_kd,
                "loss_fd": fd}  # fmt: skip

    def step_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        src = batch["source"]
        x, y = self.prep(src["image"]), src["label"]
        target = self.prep(batch["target"]["image"]) if "target" in batch else None
        out = self.source_branch(x, y, target)
        loss = out["loss_seg"] + self.hparams.kd_weight * out["loss_kd"]
        loss = loss if out["loss_fd"] is None else loss + out["loss_fd"]
        every = self.hparams.log_views_every_n_steps
        if every and self.global_step % every == 0:
            log_views(self.loggers, "train/views", x, y, out["views"], out["student_logits"][: x.shape[0]],
                      self.labels, self.global_step)  # fmt: skip
        losses = {"loss": loss, "loss_src": out["loss_seg"], "loss_kd": out["loss_kd"]}
        return losses if out["loss_fd"] is None else {**losses, "loss_fd": out["loss_fd"]}
