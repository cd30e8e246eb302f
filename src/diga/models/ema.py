"""The EMA teacher as one component (the role timm's `ModelEmaV3` plays), with the authors' momentum ramp.

`EMATeacher` holds a frozen copy of the student and averages it in at the *start* of every step, from the pre-step
student (the reference's order): θ_T ← α_i θ_T + (1 − α_i) θ_S. Warm-up and self-training share it; its decay,
ramp, mode and buffer handling are constructor arguments (conf/ema/).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

RAMPS = ("reciprocal", "power", "none")


def ema_momentum(step: int, max_momentum: float = 0.999) -> float:
    """α_i = min(1 − 1/(i+1), max): α_0 = 0 (copy), a cumulative mean of student snapshots until i = 999, then EMA."""
    return min(1.0 - 1.0 / (step + 1), max_momentum)


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen deep copy (excluded from the optimizer and from DDP gradient sync by `requires_grad=False`)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float, buffers: bool = False) -> None:
    """θ_T ← α θ_T + (1 − α) θ_S for parameters; floating buffers too when `buffers` (needed for an eval-mode teacher).

    REF averages parameters only (BN statistics of the teacher then come from its own train-mode forwards).
    """
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
    if buffers:
        for tb, sb in zip(teacher.buffers(), student.buffers()):
            if tb.dtype.is_floating_point:
                tb.mul_(momentum).add_(sb, alpha=1.0 - momentum)
            else:
                tb.copy_(sb)


class EMATeacher(nn.Module):
    """A frozen, exponentially averaged copy of a student network.

    Args:
        student: the network to follow (copied once, at construction).
        decay: the momentum α after the ramp.
        ramp: how α grows from 0: `reciprocal` (the authors and DAFormer: α_i = min(1 − 1/(i+1), decay), i.e. the
            cumulative mean of the student until i = 1/(1 − decay)), `power` (timm's ModelEmaV3 warm-up:
            α_i = min(1 − (1 + i/warmup_gamma)^−warmup_power, decay)) or `none` (α = decay from the first step).
        mode: `train` (the authors: BN uses the teacher's batch statistics, dropout active), `eval`, or
            `no_dropout` (DAFormer: train mode, but dropout and drop-path off).
        buffers: also average floating buffers (BN running statistics) — needed for an eval-mode teacher.
    """

    def __init__(self, student: nn.Module, decay: float = 0.999, ramp: str = "reciprocal", mode: str = "train",
                 buffers: bool = False, warmup_gamma: float = 1.0, warmup_power: float = 0.75) -> None:  # fmt: skip
        super().__init__()
        if ramp not in RAMPS:
            raise ValueError(f"EMA ramp must be one of {RAMPS}, got {ramp!r}")
        if mode not in ("train", "eval", "no_dropout"):
            raise ValueError(f"EMA teacher mode must be 'train', 'eval' or 'no_dropout', got {mode!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = make_teacher(student)
        self.decay, self.ramp, self.mode, self.average_buffers = decay, ramp, mode, buffers
        self.warmup_gamma, self.warmup_power = warmup_gamma, warmup_power

    def momentum(self, step: int) -> float:
        """α used at step `step` (0-based)."""
        if self.ramp == "reciprocal":
            return ema_momentum(step, self.decay)
        if self.ramp == "power":
            return min(max(1.0 - (1.0 + step / self.warmup_gamma) ** -self.warmup_power, 0.0), self.decay)
        return self.decay

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Average `student` in with the momentum of `step`; puts the teacher in its configured mode."""
        alpha = self.momentum(step)
        ema_update(self.module, student, alpha, buffers=self.average_buffers)
        self._set_mode(True)
        return alpha

    def _set_mode(self, training: bool) -> None:
        self.module.train(training and self.mode != "eval")
        if training and self.mode == "no_dropout":
            for m in self.module.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ == "DropPath":
                    m.eval()

    def train(self, mode: bool = True) -> EMATeacher:
        """Lightning switches every submodule to train/eval; the teacher keeps its configured mode while training."""
        super().train(mode)
        self._set_mode(mode)
        return self

    @torch.no_grad()
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
