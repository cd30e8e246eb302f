"""The ablation table from finished job folders: pooling sweeps, per-seed columns, duplicates refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from diga.ablation import collect, mean_std, write


def _job(sweep: Path, number: int, row: str, seed: int, miou: float, road: float) -> Path:
    """A job folder as a finished `stage=pipeline` job of the multirun leaves it."""
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "ablation_row": {"name": row, "report": {f"{row}: warm-up": "warm-up"}}}
    OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
    (job / "pipeline_results.json").write_text(json.dumps({"warm-up": {"toy_target": miou}}))
    (job / "pipeline_per_class.json").write_text(json.dumps({"toy_target": {"warm-up": {"road": road}}}))
    return job


def test_mean_and_sample_std() -> None:
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)  # sample std: sqrt(((1)² + 0 + (1)²) / 2)


def test_two_sweeps_pool_their_seeds_into_one_table(tmp_path: Path) -> None:
    first, second, out = tmp_path / "seed0", tmp_path / "seeds12", tmp_path / "table"
    _job(first, 0, "a", 0, 10.0, 50.0)
    _job(first, 1, "b", 0, 20.0, 70.0)
    _job(second, 0, "a", 1, 14.0, 60.0)
    _job(second, 1, "a", 2, 12.0, 40.0)  # row b has no seeds 1, 2 yet
    rows = write([first, second], out=out)
    assert list(rows) == ["a: warm-up", "b: warm-up"]
    assert rows["a: warm-up"]["seeds"] == {0: 10.0, 1: 14.0, 2: 12.0}
    csv = (out / "ablation.csv").read_text().splitlines()
    assert csv[0] == "row,mean,std,seed0,seed1,seed2"
    assert csv[1] == '"a: warm-up",12.0000,2.0000,10.0000,14.0000,12.0000'
    assert csv[2].endswith(",20.0000,,")  # a missing seed is an empty cell, not a shifted column
    md = (out / "ablation.md").read_text()
    assert "| a: warm-up | 12.00 ± 2.00 | 10.00 | 14.00 | 12.00 |" in md
    assert "| b: warm-up | 20.00 (one seed) | 20.00 | – | – |" in md  # no std of one value
    assert (out / "ablation_per_class.csv").read_text().splitlines()[1] == '"a: warm-up",50.00'
    assert (out / "ablation.png").stat().st_size > 0
    assert not (first / "ablation.md").exists()  # --out, not the first sweep


def test_the_same_seed_of_a_row_twice_is_refused_with_both_jobs_named(tmp_path: Path) -> None:
    one = _job(tmp_path / "x", 0, "a", 0, 10.0, 50.0)
    two = _job(tmp_path / "y", 0, "a", 0, 11.0, 50.0)
    with pytest.raises(SystemExit, match=re.escape(f"seed 0: two results, {one} and {two}")):
        collect([tmp_path / "x", tmp_path / "y"])


def test_unfinished_jobs_are_skipped_and_an_empty_sweep_is_an_error(tmp_path: Path) -> None:
    job = _job(tmp_path / "s", 0, "a", 0, 10.0, 50.0)
    (job / "pipeline_results.json").unlink()  # still running (or killed)
    with pytest.raises(SystemExit, match="no finished ablation jobs"):
        write(tmp_path / "s")


def test_pseudo_label_statistics_are_averaged_per_class_over_logged_steps(tmp_path: Path) -> None:
    from diga.ablation import LABELLED, pseudo_label_stats

    job = _job(tmp_path / "s", 0, "a", 0, 10.0, 50.0)
    log = job / "05_selftrain" / "csv" / "metrics.csv"
    log.parent.mkdir(parents=True)
    log.write_text("step,train/pl_kept,train/pl_kept/road,train/pl_precision/road,train/pl_kept/car,val/mIoU\n"
                   "9,0.4,0.5,0.9,,\n19,0.6,0.7,0.7,0.2,\n20,,,,,33.0\n")  # fmt: skip
    stats = pseudo_label_stats(job, "self-training")
    assert stats["kept"] == pytest.approx({"road": 0.6, "car": 0.2, LABELLED: 0.5})
    assert stats["precision"] == pytest.approx({"road": 0.8})  # car: no precision logged → absent, not 0
    assert pseudo_label_stats(job, "warm-up") == {} and pseudo_label_stats(job, "refinement 1") == {}


def test_plot_labels_sit_right_of_the_error_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A label drawn at the bar's end is hidden under its error bar: it goes right of mean + std."""
    from matplotlib.axes import Axes

    from diga.ablation import plot

    placed: list[tuple[float, str]] = []
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, **kw: placed.append((x, s)))
    rows = {"a": {"seeds": {0: 10.0, 1: 14.0, 2: 12.0}}, "b": {"seeds": {0: 20.0}}}  # std 2; one seed: no std
    plot(rows, tmp_path / "ablation.png", "t")
    assert [s for _, s in placed] == ["12.0", "20.0"]
    assert placed[0][0] > 12.0 + 2.0 and placed[1][0] > 20.0


def test_kept_records_pool_with_later_jobs_without_copying_a_job_twice(tmp_path: Path) -> None:
    """--keep: the few kB the table reads, per finished job, in a folder that is itself a sweep."""
    from diga.ablation import keep

    day1, day2, kept = tmp_path / "day1", tmp_path / "day2", tmp_path / "kept"
    first = _job(day1, 0, "a", 0, 10.0, 50.0)
    (first / "07_selftrain" / "csv").mkdir(parents=True)
    (first / "07_selftrain" / "csv" / "metrics.csv").write_text("step,train/pl_kept\n9,0.5\n")
    (first / "07_selftrain" / "last.ckpt").write_bytes(b"weights")  # not part of the record
    _job(day1, 1, "a", 1, 14.0, 60.0)
    (day1 / "2" / ".hydra").mkdir(parents=True)  # unfinished: no results yet
    (day1 / "2" / ".hydra" / "config.yaml").write_text("seed: 2\n")
    assert [p.name for p in keep([day1], kept)] == ["0", "1"]
    assert (kept / "0" / "07_selftrain" / "csv" / "metrics.csv").is_file()
    assert not (kept / "0" / "07_selftrain" / "last.ckpt").exists()
    assert keep([day1], kept) == []  # the same jobs again: nothing new
    _job(day2, 0, "a", 2, 12.0, 40.0)
    assert [p.name for p in keep([kept, day2], kept)] == ["2"]  # numbered after the kept ones
    assert write(kept)["a: warm-up"]["seeds"] == {0: 10.0, 1: 14.0, 2: 12.0}
    _job(tmp_path / "rerun", 0, "a", 1, 15.0, 60.0)  # seed 1 measured again, another result
    with pytest.raises(SystemExit, match="same ablation row and seed with different results"):
        keep([tmp_path / "rerun"], kept)
