"""Stage `warmup`: distillation warm-up with the cross-domain mixture (METHOD.md §4). Only source labels are used.

Per step (REF order): EMA update of the teacher (start of step) → photometric view A(x) → translated view T(x)
→ half-class mask M → CrDoMix x̃ = (1−M)·T(x) + M·A(x) → one student forward and one teacher forward on
cat(x, x̃) → L = CE(student(x), y) + λ_KD · [KD(teacher(x) → student(x̃)) + s · KD(teacher(x̃) → student(x))].
Without a translator (domain generalisation, semi-supervised) the second view is A(x).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from diga.augment import PhotometricAugment
from diga.data.samplers import step_seed
from diga.losses import symmetric_distillation
from diga.mixing import mix_images, sample_class_masks
from diga.modules.base import upsample
from diga.modules.source_only import SourceOnlyModule
from diga.modules.teacher import TeacherMixin
from diga.translation import IdentityTranslator, build_translator
from diga.utils.visualize import log_views


class WarmupModule(TeacherMixin, SourceOnlyModule):
    """Args (beyond SourceOnlyModule):
    translator: `{kind: learned|fourier|color|none, checkpoint, fourier_beta}`.
    crdomix: mix translated and augmented source by half-class masks (else the second view is T(x) or A(x)).
    photometric: kwargs of `PhotometricAugment` (beta, op probabilities, space).
    kd_weight / kd_reverse_weight: λ_KD and s (REF GTA: 0.5 / 0.5; SYNTHIA 0.25 / 0.25).
    kd_mask_void: exclude void pixels from the distillation (REF: false).
    """

    def __init__(self, *args: Any, translator: Mapping[str, Any] | None = None, crdomix: bool = True,
                 photometric: Mapping[str, Any] | None = None, kd_weight: float = 0.5, kd_reverse_weight: float = 0.5,
                 kd_mask_void: bool = False, teacher_mode: str = "train", ema_buffers: bool = False,
                 mask_seed: int = 0, log_views_every_n_steps: int = 0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.init_teacher(teacher_mode, ema_buffers)
        self.translator = build_translator(**dict(translator or {}))
        self.photometric = PhotometricAugment(**dict(photometric or {}))
        self._generator: torch.Generator | None = None
        self._generator_step = -1

    @property
    def generator(self) -> torch.Generator:
        """RNG for class-mask draws: reseeded every step from (mask_seed, step, rank), so a resumed run draws the
        same masks as an uninterrupted one."""
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        if self._generator_step != self.global_step:
            self._generator.manual_seed(step_seed(int(self.hparams.mask_seed), int(self.global_step),
                                                  int(self.global_rank)) % 2**63)  # fmt: skip
            self._generator_step = int(self.global_step)
        return self._generator

    def second_view(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The CrDoMix view x̃ (and its ingredients, for logging)."""
        aug = self.photometric(x)
        if isinstance(self.translator, IdentityTranslator) or not self.hparams.crdomix:
            translated = self.translator(x, target)
            return {"aug": aug, "translated": translated, "mixed": aug if self.hparams.crdomix else translated}
        translated = self.translator(x, target)
        mask = sample_class_masks(y, self.model.num_classes, self.generator)
        return {"aug": aug, "translated": translated, "mask": mask, "mixed": mix_images(translated, aug, mask)}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        src = batch["source"]
        x, y = self.prep(src["image"]), src["label"]
        target = self.prep(batch["target"]["image"]) if "target" in batch else None
        views = self.second_view(x, y, target)
        both = torch.cat([x, views["mixed"]])
        b, size, ac = x.shape[0], y.shape[-2:], self.model.align_corners
        z_s = upsample(self.model(both).logits, size, ac)
        z_t = upsample(self.teacher_forward(both)[0], size, ac)
        loss_seg = self.seg_loss(z_s[:b], y)
        loss_kd = symmetric_distillation(z_s[:b], z_s[b:], z_t[:b], z_t[b:], self.hparams.kd_reverse_weight,
                                         labels=y if self.hparams.kd_mask_void else None)  # fmt: skip
        loss = loss_seg + self.hparams.kd_weight * loss_kd
        self.log_losses({"loss": loss, "loss_src": loss_seg, "loss_kd": loss_kd}, batch_size=b)
        every = self.hparams.log_views_every_n_steps
        if every and self.global_step % every == 0:
            log_views(self.logger, "train/views", x, y, views, z_s[:b], self.labels, self.global_step)
        return loss
