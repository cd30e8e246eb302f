"""Run one measurement in a fresh process, so that its peak memory is its own (ru_maxrss never goes down)."""

from __future__ import annotations

import json
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


def _available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def _watch_memory(cap_gb: float | None, floor_gb: float | None, report: Path) -> None:
    """Stop this process once its resident memory passes `cap_gb` or the machine's available memory falls below
    `floor_gb`, before the kernel's OOM killer picks a victim (on a machine without swap that can be the shell or
    another job; the floor also counts this process's data-loader workers); what it reached goes to `report`."""
    while True:
        rss, free = _rss_gb(), _available_gb()
        if (cap_gb is not None and rss > cap_gb) or (floor_gb is not None and free < floor_gb):
            report.write_text(json.dumps({"rss_gb": rss, "available_gb": free}))
            os._exit(CAPPED_EXIT)
        time.sleep(0.01)


def _measured(fn: Callable[..., dict[str, Any]], args: tuple, kwargs: dict[str, Any],
              limits: tuple[float | None, float | None, Path] | None = None) -> dict[str, Any]:  # fmt: skip
    import torch

    if limits is not None:
        threading.Thread(target=_watch_memory, args=limits, daemon=True).start()
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
             min_available_gb: float | None = None, **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    """`fn(*args, **kwargs)` in a new (spawned, non-daemon) process; adds its peak memory to the result.

    With `rss_cap_gb` (its resident memory) or `min_available_gb` (the machine's available memory) the process is
    stopped at that limit and the failure says so: a measurement that does not fit in this machine's memory becomes
    a lower bound instead of an OOM kill."""
    with tempfile.TemporaryDirectory() as tmp, \
            ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:  # fmt: skip
        report = Path(tmp) / "stopped.json"
        watched = rss_cap_gb is not None or min_available_gb is not None
        limits = (rss_cap_gb, min_available_gb, report) if watched else None
        try:
            return pool.submit(_measured, fn, args, kwargs, limits).result()
        except Exception as e:  # e.g. killed for memory: report it, go on with the next measurement
            name = f"{getattr(fn, '__name__', fn)}{args}"
            if report.exists():
                reached = json.loads(report.read_text())
                limits_text = f"limits: {rss_cap_gb} GB resident, {min_available_gb} GB available"
                raise MemoryCapReached(f"{name}: stopped at {reached['rss_gb']:.2f} GB resident with "
                                       f"{reached['available_gb']:.2f} GB left available ({limits_text})",
                                       reached["rss_gb"]) from e  # fmt: skip
            raise MeasurementFailed(f"{name}: {type(e).__name__}: {e}") from e


class MeasurementFailed(RuntimeError):
    """One isolated measurement failed (its process died or raised); the run continues without it."""


class MemoryCapReached(MeasurementFailed):
    """The measurement reached its memory limit and was stopped: its peak is at least `reached_gb` resident."""

    def __init__(self, message: str, reached_gb: float) -> None:
        super().__init__(message)
        self.reached_gb = reached_gb
