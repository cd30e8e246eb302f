"""Lightning's CSVLogger, except that a resumed run keeps the rows logged before its interruption.

Lightning's writer deletes `metrics.csv` when it finds its folder in use ("Previous log files … will be deleted"):
after `ckpt_path=last` the CSV would hold only what came after the resume. Here, when the run resumes from a
checkpoint at global step S, the rows of the steps before S stay (their header too) and the rows at or after S —
logged after that checkpoint was written, and about to be logged again by the resumed run — are dropped, so the
file reads as if the run had never stopped. A fresh run (`overwrite=true`) starts a new file, as Lightning does.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from diga.utils.io import atomic_write_bytes


def kept_rows(path: str, before_step: int) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows whose `step` is below `before_step`) of an existing metrics CSV."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("step", "") == "" or int(float(r["step"])) < before_step]
        return list(reader.fieldnames or []), rows


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if self._resume_step is None or not os.path.isfile(self.metrics_file_path):
            super()._check_log_dir_exists()
            return
        header, rows = kept_rows(self.metrics_file_path, self._resume_step)
        self.metrics_keys = sorted(header)
        text = _csv_text(self.metrics_keys, rows)
        atomic_write_bytes(self.metrics_file_path, text.encode())


def _csv_text(keys: list[str], rows: list[dict[str, Any]]) -> str:
    import io

    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class ResumableCSVLogger(CSVLogger):
    """`CSVLogger` with `resume_from_step(S)`, which the training task calls before fitting from a checkpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step: int | None = None

    def resume_from_step(self, step: int) -> None:
        self._resume_step = int(step)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self._resume_step)
        return self._experiment
