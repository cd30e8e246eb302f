"""Lightning callback that splits a stage's training time into phases (see `diga.utils.timing`)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch

from diga.utils.timing import STEP_PART_PREFIX, PhaseTimes

STEP_PARTS = ("forward and losses", "backward", "optimiser step")
"""How a training step's time splits, each a sub-phase `training steps › <part>` of `timings.json`. Time before a
backward pass is forward (the EMA update and, in manually optimised stages such as the translator, the optimiser
steps between its backward passes included), time inside one is backward, and time after the last one is the
optimiser step (gradient clipping and logging included)."""


class DeviceClock:
    """Time marks on the timeline of the device that does the work.

    On a GPU the host queues kernels and runs ahead, so host timestamps around a step measure how fast the host
    queued it, not how long the GPU took. A mark there is a CUDA event recorded on the current stream — recording
    does not wait — and the intervals are read in one batch (one synchronisation per `flush_every` intervals and
    at the end of training). On a CPU a mark is `time.perf_counter()` and intervals are read at once.
    """

    def __init__(self, device: torch.device, flush_every: int = 256) -> None:
        self.cuda = device.type == "cuda"
        self.flush_every = flush_every
        self.pending: list[tuple[str, Any, Any]] = []

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def add(self, times: PhaseTimes, name: str, start: Any, end: Any) -> None:
        if not self.cuda:
            times.add(name, end - start)
            return
        self.pending.append((name, start, end))
        if len(self.pending) >= self.flush_every:
            self.flush(times)

    def flush(self, times: PhaseTimes) -> None:
        """Read every pending interval (one wait for the last event)."""
        if not self.pending:
            return
        self.pending[-1][2].synchronize()
        for name, start, end in self.pending:
            times.add(name, start.elapsed_time(end) / 1000.0)
        self.pending = []


class PhaseTimer(pl.Callback):
    """First batch (loader start-up), training steps (split into `STEP_PARTS`, timed on the device), validation,
    and the waits between steps (data loading, logging, checkpoint writes — `AtomicCheckpointIO` reports its own
    write time)."""

    def __init__(self, times: PhaseTimes) -> None:
        self.times = times
        self.clock = DeviceClock(torch.device("cpu"))
        self._fit_start = self._last_end = self._val_start = 0.0
        self._step_start: Any = None
        self._mark: Any = None
        self._first = True

    def _part(self, index: int) -> None:
        now = self.clock.mark()
        self.clock.add(self.times, STEP_PART_PREFIX + STEP_PARTS[index], self._mark, now)
        self._mark = now

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self.clock = DeviceClock(pl_module.device)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if self._first:
            self.times.add("first batch (loader start-up)", now - self._fit_start)
            self._first = False
        elif self._last_end:
            self.times.add("between steps (data, logging, checkpoints)", now - self._last_end)
        self._step_start = self._mark = self.clock.mark()

    def on_before_backward(self, trainer: pl.Trainer, *args: Any) -> None:
        self._part(0)

    def on_after_backward(self, trainer: pl.Trainer, *args: Any) -> None:
        self._part(1)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self._part(2)
        self.clock.add(self.times, "training steps", self._step_start, self._mark)
        self._last_end = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.flush(self.times)  # waits for the training steps queued so far: they are not validation
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dt = time.perf_counter() - self._val_start  # ends with the confusion matrices read back: on the device's time
        self.times.add("validation", dt)
        if self._last_end:  # validation ran between two steps: not data waiting
            self._last_end += dt

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.flush(self.times)
