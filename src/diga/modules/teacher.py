"""Mixin for stages with an EMA teacher: creation, the per-step update (REF order) and the teacher's mode."""

from __future__ import annotations

from typing import Any

import torch

from diga.models.ema import ema_momentum, ema_update, make_teacher


class TeacherMixin:
    """Adds `self.teacher`, updated at the *start* of every training step from the pre-step student (METHOD.md §4.2).

    teacher_mode: "train" (REF: BN batch statistics, active dropout) or "eval".
    ema_buffers: also average BN buffers — needed for an eval-mode teacher (REF averages parameters only).
    """

    def init_teacher(self, teacher_mode: str = "train", ema_buffers: bool = False, ema_max: float = 0.999) -> None:
        if teacher_mode not in ("train", "eval"):
            raise ValueError(f"teacher_mode must be 'train' or 'eval', got {teacher_mode!r}")
        self.teacher = make_teacher(self.model)  # type: ignore[attr-defined]
        self._teacher_mode, self._ema_buffers, self._ema_max = teacher_mode, ema_buffers, ema_max

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)  # type: ignore[misc]
        step = int(self.global_step)  # type: ignore[attr-defined]
        ema_update(self.teacher, self.model, ema_momentum(step, self._ema_max), buffers=self._ema_buffers)  # type: ignore[attr-defined]
        self.teacher.train(self._teacher_mode == "train")

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.teacher(x)
        return out.logits, out.feat
