"""Offline progress lines (output redirected): how far along, how fast, how long is left."""

from __future__ import annotations

import itertools

import pytest

import diga.utils.progress as progress_mod


def test_redirected_progress_lines_give_the_time_left(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    clock = itertools.count(0.0, 6.0)  # 6 s per image
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(progress_mod.sys.stdout, "isatty", lambda: False)
    with caplog.at_level("INFO", logger="diga"):
        assert list(progress_mod.progress(range(20), 20, "evaluating")) == list(range(20))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "evaluating: 2/20 (0.2/s, about 2 min left)", lines
    assert lines[-1] == "evaluating: 20/20 (0.2/s)"


def test_durations_are_rounded_to_what_an_estimate_knows() -> None:
    assert [progress_mod._duration(s) for s in (42, 600, 9000)] == ["42 s", "10 min", "2.5 h"]
