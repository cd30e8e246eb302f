"""SIGTERM — SLURM preemption, `docker stop`, `kill` — ends a training stage resumably and visibly.

Lightning stops at the end of the current step by raising `SIGTERMException`, a `SystemExit` whose code is 0: a
scheduler would record an unfinished run as a success and not requeue it. This callback writes `last.ckpt` at that
step (so `ckpt_path=last` resumes there) and flushes the loggers; the training task turns the stop into
`StageInterrupted`, which `diga.train` reports in one line and exits with 143 (128 + SIGTERM), the code a shell
gives a process that SIGTERM ended.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from diga.utils.artifacts import LAST_CHECKPOINT

SIGTERM_EXIT_CODE = 143


class StageInterrupted(RuntimeError):
    """A training stage stopped by SIGTERM after writing a checkpoint to resume from."""

    def __init__(self, stage: str, step: int | None, checkpoint: Path | None) -> None:
        after = f" after step {step}" if step is not None else ""
        how = f"{checkpoint} resumes it" if checkpoint else "it has no checkpoint yet and starts anew when run again"
        super().__init__(f"stage {stage} stopped by SIGTERM{after}; {how}")
        self.stage, self.step, self.checkpoint = stage, step, checkpoint


class CheckpointOnSigterm(pl.Callback):
    """On Lightning's SIGTERM stop only (not on errors: a NaN guard stop must not checkpoint bad weights).

    One process saves at the end of the step the signal arrived in, where `ModelCheckpoint` saves too, so the resumed
    run continues exactly (its epoch counter included). Under DDP the ranks learn of the signal only when the next
    step starts, where Lightning raises its stop on all of them: the checkpoint is written then (same weights and
    data order; Lightning's epoch counter, which diga does not use, reads one higher after the resume).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / LAST_CHECKPOINT
        self._saved_at: int | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.received_sigterm and trainer.world_size == 1:
            self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and self._saved_at != trainer.global_step:
            self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        # all of the state (loops, optimisers, callbacks); every rank calls it (it synchronises), rank 0 writes
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_at = trainer.global_step
        for logger in trainer.loggers:
            logger.save()
