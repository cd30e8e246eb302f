"""Lightning's TensorBoardLogger, except that a resumed run's curves do not show the replayed steps twice.

After `ckpt_path=last` the run logs again the steps between its last checkpoint and the interruption, into a new
event file beside the old one. The SummaryWriter's `purge_step` marks the new file's start at the checkpoint's step:
TensorBoard then drops every earlier event at or after that step, so each curve reads as if the run had never stopped.
"""

from __future__ import annotations

from pytorch_lightning.loggers import TensorBoardLogger


class ResumableTensorBoardLogger(TensorBoardLogger):
    """`TensorBoardLogger` with `resume_from_step(S)`, called by the training task before fitting from a checkpoint."""

    def resume_from_step(self, step: int) -> None:
        if self._experiment is not None:
            raise RuntimeError("resume_from_step must come before the first event is written (the writer is open)")
        self._kwargs["purge_step"] = int(step)
