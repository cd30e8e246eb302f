"""How data-loader worker processes start.

A worker inherits its start method from the process that creates the loader, and that is not always `fork` on Linux:
a process started by `spawn` (Lightning's `ddp_spawn` ranks, `ProcessPoolExecutor(mp_context=spawn)` measurements,
notebooks' `ddp_notebook`) has `spawn` as its default too, and Python 3.14 makes `forkserver` the Linux default.
A spawned worker imports torch, Lightning, albumentations and diga again before its first batch (about 10 s on a
2-core CPU, at every loader start unless the workers persist). Forking the loader's process costs milliseconds and is
what PyTorch's loaders have always done on Linux; where the platform has no safe `fork` (macOS, Windows) its default
is kept.
"""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.context import BaseContext


def worker_context(num_workers: int) -> BaseContext | None:
    """The `multiprocessing_context` for a DataLoader with `num_workers` workers (None: no workers, or the
    platform's default)."""
    if num_workers <= 0 or not sys.platform.startswith("linux"):
        return None
    return multiprocessing.get_context("fork")
