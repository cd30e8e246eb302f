"""Stop a run at the first non-finite loss, before the optimiser step can spread NaN/Inf into the weights.

Two guards, because a finite loss does not prove finite weights (an Inf gradient turns Adam's moments and then the
weights into NaN one step before the loss shows it):

* no checkpoint is written whose weights, buffers or optimiser state are non-finite;
* when the loss becomes non-finite, the error names the newest checkpoint on disk whose tensors are all finite
  (checked by loading it, not inferred from the loss), so resuming from it starts from good weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from diga.utils.artifacts import LAST_CHECKPOINT
from diga.utils.atomic_checkpoints import read_checkpoint


class NonFiniteLossError(FloatingPointError):
    """The training loss, or the weights about to be checkpointed, became NaN or Inf."""


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def first_non_finite(checkpoint: dict[str, Any]) -> str | None:
    """Name of the first floating tensor of the weights or optimiser state that holds NaN/Inf, else None."""
    for section in ("state_dict", "optimizer_states"):
        for name, t in _tensors(checkpoint.get(section, {}), section):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return name
    return None


def newest_finite_checkpoint(paths: Iterable[str | Path]) -> tuple[Path, int] | None:
    """(path, global step) of the Lightning checkpoint with the highest `global_step` whose weights and optimiser
    state are all finite; on a tie `last.ckpt` (what `ckpt_path=last` resumes), then the first name — the same answer
    in every process. Each file is read once (`read_checkpoint`: no code runs)."""
    best: tuple[int, Path] | None = None
    for path in sorted({Path(p) for p in paths if p}, key=lambda q: (q.name != LAST_CHECKPOINT, str(q))):
        try:
            ckpt = read_checkpoint(path)
        except Exception:  # unreadable, truncated or holding code: not a checkpoint to resume from
            continue
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
            continue
        if first_non_finite(ckpt) is None:
            step = int(ckpt["global_step"])
            if best is None or step > best[0]:
                best = (step, path)
    return (best[1], best[0]) if best else None


class StopOnNonFiniteLoss(pl.Callback):
    """The loss check reads the device once per optimiser step: every backward pass of the step (micro-batches,
    DAFormer's sequential phases) folds `isfinite(loss)` into a flag on the device, and the flag is read just before
    the optimiser steps. Reading it at every backward made the device wait for the host 1–4 times per step."""

    def __init__(self) -> None:
        self._finite: torch.Tensor | None = None
        self._losses: list[torch.Tensor] = []

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        loss = loss.detach()
        finite = torch.isfinite(loss).all()
        self._finite = finite if self._finite is None else self._finite & finite
        self._losses.append(loss)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:  # fmt: skip
        finite, losses = self._finite, self._losses
        self._finite, self._losses = None, []
        if finite is None or bool(finite):
            return
        values = [v for t in losses for v in t.float().flatten().cpu().tolist()]
        raise NonFiniteLossError(
            f"training loss is {values if len(values) > 1 else values[0]} at step {trainer.global_step}; stopping "
            f"before the weights are corrupted. Last good checkpoint: {self._last_good(trainer)}"
        )

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:  # fmt: skip
        # Lightning assembles the dict before writing it: raising here keeps the previous files untouched.
        bad = first_non_finite(checkpoint)
        if bad is not None:
            raise NonFiniteLossError(
                f"`{bad}` is non-finite at step {trainer.global_step}; not writing a checkpoint of corrupted "
                f"weights. Last good checkpoint: {self._last_good(trainer)}"
            )

    @staticmethod
    def _last_good(trainer: pl.Trainer) -> str:
        cb = trainer.checkpoint_callback
        if cb is None:
            return "none (checkpointing is off)"
        candidates = [getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")]
        dirpath = getattr(cb, "dirpath", None)
        if dirpath and Path(dirpath).is_dir():
            candidates += sorted(Path(dirpath).glob("*.ckpt"))
        good = newest_finite_checkpoint(candidates)
        return str(good[0]) if good else "none with finite weights written yet"
