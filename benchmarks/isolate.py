"""Run one measurement in a fresh process, so that its peak memory is its own (ru_maxrss never goes down)."""

from __future__ import annotations

import multiprocessing as mp
import resource
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def _rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _measured(fn: Callable[..., dict[str, Any]], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    import torch

    before = _rss_gb()  # interpreter + torch + Lightning, before the measured work
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    out = dict(fn(*args, **kwargs))
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["rss_before_gb"] = before
    if torch.cuda.is_available():
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def isolated(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """`fn(*args, **kwargs)` in a new (spawned, non-daemon) process; adds its peak memory to the result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        try:
            return pool.submit(_measured, fn, args, kwargs).result()
        except Exception as e:  # e.g. killed for memory: report it, go on with the next measurement
            raise MeasurementFailed(f"{getattr(fn, '__name__', fn)}{args}: {type(e).__name__}: {e}") from e


class MeasurementFailed(RuntimeError):
    """One isolated measurement failed (its process died or raised); the run continues without it."""
