"""`make reproduce`: the reduced toy pipeline against the committed table; the comparison logic on its own."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from benchmarks import reproduce


def _table() -> dict:
    return json.loads(reproduce.EXPECTED.read_text())


def test_comparison_is_exact_on_the_same_kernels_and_tolerant_elsewhere() -> None:
    expected = _table()
    ok, _ = reproduce.check(expected, expected, expected["kernel_signature"])
    assert ok
    moved = copy.deepcopy(expected)
    name = next(iter(moved["per_class"]))
    stage = next(iter(moved["per_class"][name]))
    cls = next(iter(moved["per_class"][name][stage]))
    moved["per_class"][name][stage][cls] += 0.01  # one class moves by 0.01 IoU points
    ok, report = reproduce.check(expected, moved, expected["kernel_signature"])
    assert not ok and cls in report and "+0.01" in report
    ok, report = reproduce.check(expected, moved, "another-signature")  # other kernels: mIoU within tolerance
    assert ok and "another-signature" in report
    far = copy.deepcopy(expected)
    first_stage = next(iter(far["miou"]))
    far["miou"][first_stage][name] += expected["tolerance_miou"] + 0.5
    ok, _ = reproduce.check(expected, far, "another-signature")
    assert not ok


@pytest.mark.slow(seconds=300)
def test_reduced_toy_pipeline_reproduces_the_committed_table(tmp_path: Path) -> None:
    got, env = reproduce.run_reduced(tmp_path)
    ok, report = reproduce.check(_table(), got, env["kernel_signature"])
    assert ok, report


def test_a_second_measured_machine_compares_exactly_against_its_own_table() -> None:
    expected = _table()
    assert expected.get("also_exact_on"), "the committed table lists no second machine: this test would check nothing"
    for signature, own in expected["also_exact_on"].items():
        got = {"miou": own["miou"], "per_class": own["per_class"]}
        ok, report = reproduce.check(expected, got, signature)
        assert ok and "exact comparison" in report
        moved = copy.deepcopy(got)
        stage = next(iter(moved["miou"]))
        moved["miou"][stage]["toy_target"] += 0.01  # within the tolerance, but not exact: refused on that machine
        assert not reproduce.check(expected, moved, signature)[0]
