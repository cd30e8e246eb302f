"""Run one measurement in a fresh process, so that its peak memory is its own (ru_maxrss never goes down)."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

CAPPED_EXIT = 75  # the exit status of a measurement stopped at its memory cap


def _rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _watch_rss(cap_gb: float, report: Path) -> None:
    """Stop this process once its resident memory passes `cap_gb`, before the kernel's OOM killer picks a victim
    (on a machine without swap that can be the shell or another job); the level reached goes to `report`."""
    while True:
        rss = _rss_gb()
        if rss > cap_gb:
            report.write_text(repr(rss))
            os._exit(CAPPED_EXIT)
        time.sleep(0.01)


def _measured(fn: Callable[..., dict[str, Any]], args: tuple, kwargs: dict[str, Any],
              cap: tuple[float, Path] | None = None) -> dict[str, Any]:  # fmt: skip
    import torch

    if cap is not None:
        threading.Thread(target=_watch_rss, args=cap, daemon=True).start()
    before = _rss_gb()  # interpreter + torch + Lightning, before the measured work
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    out = dict(fn(*args, **kwargs))
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["rss_before_gb"] = before
    if torch.cuda.is_available():
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def isolated(fn: Callable[..., dict[str, Any]], *args: Any, rss_cap_gb: float | None = None,
             **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    """`fn(*args, **kwargs)` in a new (spawned, non-daemon) process; adds its peak memory to the result.

    With `rss_cap_gb` the process is stopped once its resident memory passes the cap, and the failure says so: a
    measurement that does not fit in this machine's memory becomes a lower bound instead of an OOM kill."""
    with tempfile.TemporaryDirectory() as tmp, \
            ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:  # fmt: skip
        report = Path(tmp) / "capped"
        cap = None if rss_cap_gb is None else (rss_cap_gb, report)
        try:
            return pool.submit(_measured, fn, args, kwargs, cap).result()
        except Exception as e:  # e.g. killed for memory: report it, go on with the next measurement
            name = f"{getattr(fn, '__name__', fn)}{args}"
            if report.exists():
                reached = float(report.read_text())
                raise MemoryCapReached(f"{name}: stopped at {reached:.2f} GB resident, over the {rss_cap_gb:.1f} GB "
                                       "cap", reached) from e  # fmt: skip
            raise MeasurementFailed(f"{name}: {type(e).__name__}: {e}") from e


def physical_memory_gb() -> float:
    """This machine's RAM (the ceiling a CPU measurement's cap is taken from)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


class MeasurementFailed(RuntimeError):
    """One isolated measurement failed (its process died or raised); the run continues without it."""


class MemoryCapReached(MeasurementFailed):
    """The measurement passed its resident-memory cap: its peak is at least `reached_gb`."""

    def __init__(self, message: str, reached_gb: float) -> None:
        super().__init__(message)
        self.reached_gb = reached_gb
