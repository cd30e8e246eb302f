"""Loggers: Lightning's own, where a resumed run needs them to keep what was logged before."""

from collections.abc import Iterable
from typing import Any

from diga.loggers.resumable_csv import ResumableCSVLogger
from diga.loggers.resumable_tensorboard import ResumableTensorBoardLogger

RESUMABLE_LOGGERS = (ResumableCSVLogger, ResumableTensorBoardLogger)


def resume_loggers(loggers: Iterable[Any], step: int) -> None:
    """Tell every logger that keeps a run's history that the run resumes from a checkpoint at global step `step`."""
    for logger in loggers:
        if isinstance(logger, RESUMABLE_LOGGERS):
            logger.resume_from_step(step)


__all__ = ["RESUMABLE_LOGGERS", "ResumableCSVLogger", "ResumableTensorBoardLogger", "resume_loggers"]
