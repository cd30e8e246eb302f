"""Which checkpoint a stage resumes from: intact ones load, damaged and foreign ones are named, `last` falls back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diga.config.preflight import PreflightError
from diga.loggers.resumable_csv import kept_rows
from diga.tasks.resume import checkpoint_problem, resume_point


def _ckpt(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.ones(2)}}, path)
    return path


def test_intact_checkpoints_resume_and_no_request_means_none(tmp_path: Path) -> None:
    last = _ckpt(tmp_path / "last.ckpt", 8)
    assert resume_point(None, tmp_path) is None
    assert resume_point("last", tmp_path).global_step == 8
    assert resume_point(str(last), tmp_path / "elsewhere").path == last
    assert resume_point("last", tmp_path / "empty") is None  # nothing to resume yet: a fresh start


def test_a_truncated_last_falls_back_to_the_newest_intact_checkpoint(tmp_path: Path) -> None:
    _ckpt(tmp_path / "step_000004.ckpt", 4)
    _ckpt(tmp_path / "step_000002.ckpt", 2)
    last = _ckpt(tmp_path / "last.ckpt", 6)
    last.write_bytes(last.read_bytes()[:100])
    point = resume_point("last", tmp_path)
    assert (point.path.name, point.global_step) == ("step_000004.ckpt", 4)
    with pytest.raises(PreflightError, match=r"last\.ckpt does not load.*step 4: ckpt_path=.*step_000004\.ckpt"):
        resume_point(str(last), tmp_path)


def test_nothing_intact_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "last.ckpt").write_bytes(b"not a zip")
    with pytest.raises(PreflightError, match=r"no other checkpoint .* loads.*overwrite=true"):
        resume_point("last", tmp_path)
    with pytest.raises(PreflightError, match="does not exist"):
        resume_point(str(tmp_path / "nope.ckpt"), tmp_path)


class _Code:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return print, ("ran",)


def test_foreign_and_non_lightning_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    torch.save({"global_step": 1, "state_dict": {}, "x": _Code()}, tmp_path / "pickle.ckpt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.pt")
    problem, _ = checkpoint_problem(tmp_path / "pickle.ckpt")
    assert problem is not None and "could run code" in problem
    problem, _ = checkpoint_problem(tmp_path / "plain.pt")
    assert problem is not None and "not a Lightning training checkpoint" in problem


def test_kept_rows_are_those_logged_before_the_resumed_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss\n0,0,1.0\n0,1,0.9\n,1,\n0,2,0.8\n0,3,0.7\n")
    header, rows = kept_rows(str(path), before_step=2)
    assert header == ["epoch", "step", "train/loss"]
    assert [r["step"] for r in rows] == ["0", "1", "1"]
