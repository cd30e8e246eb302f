"""Stop a run at the first non-finite loss, before the optimiser step can spread NaN/Inf into the weights.

Checkpoints are written atomically and only at their interval, so the last checkpoint on disk is from before the
failure; the error names it so the run can be resumed (e.g. with a lower learning rate).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf."""


class StopOnNonFiniteLoss(pl.Callback):
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self._check(trainer, loss)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # manual-optimisation stages return nothing; their losses are logged
            self._check(trainer, loss)
        logged = trainer.callback_metrics.get("train/loss")
        if isinstance(logged, torch.Tensor):
            self._check(trainer, logged)

    @staticmethod
    def _check(trainer: pl.Trainer, loss: torch.Tensor) -> None:
        if torch.isfinite(loss).all():
            return
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        raise NonFiniteLossError(
            f"training loss is {loss.detach().float().cpu().tolist()} at step {trainer.global_step}; stopping before "
            f"the weights are corrupted. Last good checkpoint: {ckpt}"
        )
