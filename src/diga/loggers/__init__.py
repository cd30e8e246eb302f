"""Loggers: Lightning's own, where a resumed run needs them to keep what was logged before."""

from diga.loggers.resumable_csv import ResumableCSVLogger
from diga.loggers.resumable_tensorboard import ResumableTensorBoardLogger

__all__ = ["ResumableCSVLogger", "ResumableTensorBoardLogger"]
