"""Count the host reads and CUDA synchronisations of chosen training steps (see `diga.utils.host_syncs`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl

from diga.utils.host_syncs import HOST_SAMPLED, HostSyncCounter


class CountStepSyncs(pl.Callback):
    """For each training step in `steps` (global step numbers), from this callback's batch-start hook to its
    batch-end hook: `host_reads` (Python-level reads of tensor values) and `cuda_syncs` (CUDA's own count)."""

    def __init__(self, steps: Sequence[int], ignore: tuple[str, ...] = HOST_SAMPLED) -> None:
        self.steps, self.ignore = set(steps), tuple(ignore)
        self.host_reads: list[int] = []
        self.cuda_syncs: list[int] = []
        self._counter: HostSyncCounter | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step in self.steps:
            self._counter = HostSyncCounter(ignore=self.ignore).__enter__()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.host_reads.append(self._counter.calls)
            self.cuda_syncs.append(self._counter.cuda_syncs)
            self._counter = None
