"""Progress of the offline stages: a live bar in a terminal, a few plain log lines when the output is redirected
(no ANSI escape codes in log files)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("diga")
MIN_LOG_INTERVAL_S = 5.0  # redirected output: a line every ~10 % of the work, but not more often than this


def progress(items: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Yield `items`, showing how far along `description` is and the time left (rich's bar on a TTY, every ~10 %
    otherwise)."""
    if not enabled or total <= 0:
        yield from items
        return
    if sys.stdout.isatty():
        from rich.progress import track

        yield from track(items, total=total, description=description, transient=True)
        return
    start, step = time.perf_counter(), max(1, total // 10)
    last = start
    for done, item in enumerate(items, start=1):
        yield item
        now = time.perf_counter()
        if done == total or (done % step == 0 and now - last >= MIN_LOG_INTERVAL_S):  # quick loops: one line
            last = now
            rate = done / max(now - start, 1e-9)
            left = f", about {_duration((total - done) / rate)} left" if done < total else ""
            log.info("%s: %d/%d (%.1f/s%s)", description, done, total, rate, left)


def _duration(seconds: float) -> str:
    """`42 s`, `7 min`, `2.5 h`: an estimate, to the precision it has."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
