"""Where a stage's wall time goes: named phases accumulated while it runs, written to `timings.json`.

Every stage records its phases (building the model and data, waiting for batches, training steps, validation,
checkpoint writes, export; for the offline stages reading, predicting and writing), so a slow stage can be read
off its run directory instead of guessed at. The rehearsal prints them per stage.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

STEP_PART_PREFIX = "training steps › "
"""Sub-phases of `training steps` (forward, backward, optimiser; see `diga.callbacks.timing.STEP_PARTS`)."""


def step_parts(phases: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Seconds per part of the training steps, read from a `timings.json` dict, in the order they were recorded."""
    return {k.removeprefix(STEP_PART_PREFIX): v["seconds"] for k, v in phases.items() if k.startswith(STEP_PART_PREFIX)}


class PhaseTimes:
    """Seconds (and counts) per named phase, in the order phases first appeared."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.started = time.perf_counter()

    def add(self, name: str, seconds: float, count: int = 1) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + count

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def as_dict(self) -> dict[str, dict[str, float]]:
        total = time.perf_counter() - self.started
        out = {k: {"seconds": round(v, 3), "count": self.counts[k]} for k, v in self.seconds.items()}
        out["total"] = {"seconds": round(total, 3), "count": 1}
        return out

    def write(self, path: str | Path) -> None:
        from diga.utils.io import atomic_write_bytes

        atomic_write_bytes(path, json.dumps(self.as_dict(), indent=1).encode())

    def summary(self) -> str:
        d = self.as_dict()
        return ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in d.items())
