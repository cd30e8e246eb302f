"""What a run prints: a live bar in a terminal, plain step lines when the output goes to a file, and none of the
library chatter that says nothing about this run.

* In a terminal: Lightning's rich progress bar, labelled by stage and step (training is step-based here, so
  Lightning's "Epoch 0/-2" is replaced).
* Redirected (a log file, SLURM, `| tee`): no bar and no ANSI codes; a line every `every_n_steps` with the step,
  the logged losses, speed and time left.
* Lightning's tip about its cloud logger, the `limit_val_batches=1.0` notice, the TPU line, the model summary with
  zero FLOPs and a deprecation warning raised inside Lightning are dropped; diga logs its own one-line summary.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

log = logging.getLogger("diga")

LIGHTNING_NOISE = (
    "💡 Tip:",  # advertises Lightning's cloud logger on every run
    "was configured so 100% of the batches will be used",  # limit_val_batches=1.0 is the default
    "TPU available:",
)


# Lightning warnings that every diga run would raise and none can act on
LIGHTNING_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's own _pytree helper under torch ≥ 2.10
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # short runs (tests, smoke)
    r"You passed in a `val_dataloader` but have no `validation_step`",  # the translator stage is not validated
    r"Using ModelCheckpoint with manual optimization",  # post-step state at step N is what diga checkpoints
    r"Found \d+ module\(s\) in eval mode at the start of training",  # frozen teacher/translator, on purpose
    r"Total length of `list` across ranks is zero",  # no validation set: a target of one's own images, unlabelled
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(s in record.getMessage() for s in LIGHTNING_NOISE)


def quiet_third_party() -> None:
    """Idempotent: filter Lightning's chatter and the warnings its own internals raise."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                 "lightning_fabric.utilities.rank_zero"):  # fmt: skip
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    for message in LIGHTNING_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def is_terminal() -> bool:
    return sys.stdout.isatty()


class StepProgressBar(RichProgressBar):
    """Rich bar labelled `<stage> step`: steps, not epochs, are the unit of every diga stage."""

    def __init__(self, stage: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage = stage

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{self.stage} step"


class StepLog(pl.Callback):
    """Redirected output: one plain line every `every_n_steps` training steps (and at the last one)."""

    def __init__(self, stage: str, every_n_steps: int = 50) -> None:
        self.stage, self.every = stage, max(1, int(every_n_steps))
        self._start: float | None = None
        self._start_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._start_step = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step, total = trainer.global_step, trainer.max_steps
        if not trainer.is_global_zero or (step % self.every and step != total):
            return
        elapsed = time.perf_counter() - (self._start or time.perf_counter())
        rate = (step - self._start_step) / max(elapsed, 1e-9)
        losses = " ".join(
            f"{k[len('train/') :]} {float(v):.4g}"
            for k, v in sorted(trainer.callback_metrics.items())
            if k.startswith("train/") and k.count("/") == 1 and v.numel() == 1
        )  # per-class ones: W&B
        left = f", {_hms((total - step) / rate)} left" if total > 0 and rate > 0 else ""
        log.info("%s step %d/%s · %s · %.2f steps/s%s", self.stage, step, total if total > 0 else "?", losses, rate,
                 left)  # fmt: skip


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def console_callbacks(stage: str, every_n_steps: int, progress_bar: bool) -> tuple[list[pl.Callback], bool]:
    """(callbacks, enable_progress_bar) for this process's output."""
    if not progress_bar:
        return [], False
    if is_terminal():
        return [StepProgressBar(stage)], True
    return [StepLog(stage, every_n_steps)], False


def model_summary_line(module: pl.LightningModule) -> str:
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return f"{type(module).__name__}: {total / 1e6:.1f} M parameters ({trainable / 1e6:.1f} M trained)"
