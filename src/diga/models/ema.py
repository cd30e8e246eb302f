"""The EMA teacher and its momentum schedule (METHOD.md §4.2)."""

from __future__ import annotations

import copy

import torch
from torch import nn


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
