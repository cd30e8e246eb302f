"""Loggers: Lightning's own, where a resumed run needs them to keep what was logged before."""

from diga.loggers.resumable_csv import ResumableCSVLogger

__all__ = ["ResumableCSVLogger"]
