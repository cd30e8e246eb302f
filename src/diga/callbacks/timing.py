"""Lightning callback that splits a stage's training time into phases (see `diga.utils.timing`)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl

from diga.utils.timing import STEP_PART_PREFIX, PhaseTimes

STEP_PARTS = ("forward and losses", "backward", "optimiser step")
"""How a training step's time splits, each a sub-phase `training steps › <part>` of `timings.json`. Time before a
backward pass is forward (the EMA update and, in manually optimised stages such as the translator, the optimiser
steps between its backward passes included), time inside one is backward, and time after the last one is the
optimiser step (gradient clipping and logging included)."""


class PhaseTimer(pl.Callback):
    """First batch (loader start-up), training steps (split into `STEP_PARTS`), validation, and the waits between
    steps (data loading, logging, checkpoint writes — `AtomicCheckpointIO` reports its own write time)."""

    def __init__(self, times: PhaseTimes) -> None:
        self.times = times
        self._fit_start = self._step_start = self._last_end = self._val_start = self._mark = 0.0
        self._first = True

    def _part(self, index: int) -> None:
        now = time.perf_counter()
        self.times.add(STEP_PART_PREFIX + STEP_PARTS[index], now - self._mark)
        self._mark = now

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if self._first:
            self.times.add("first batch (loader start-up)", now - self._fit_start)
            self._first = False
        elif self._last_end:
            self.times.add("between steps (data, logging, checkpoints)", now - self._last_end)
        self._step_start = self._mark = now

    def on_before_backward(self, trainer: pl.Trainer, *args: Any) -> None:
        self._part(0)

    def on_after_backward(self, trainer: pl.Trainer, *args: Any) -> None:
        self._part(1)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._part(2)
        self._last_end = self._mark
        self.times.add("training steps", self._last_end - self._step_start)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dt = time.perf_counter() - self._val_start
        self.times.add("validation", dt)
        if self._last_end:  # validation ran between two steps: not data waiting
            self._last_end += dt
