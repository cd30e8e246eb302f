"""The whole toy pipeline end to end at tiny size; skipping of finished stages; resumption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diga.tasks import run_task
from tests.helpers import TINY_PSEUDO_LABELS, compose_cfg, tiny_pipeline_overrides, tiny_toy_overrides


@pytest.mark.slow(seconds=45)
def test_toy_pipeline_end_to_end_and_skips_done_stages(tmp_path: Path, toy_root: Path, capsys, caplog) -> None:
    base = [*tiny_toy_overrides(tmp_path, toy_root.parent), *tiny_pipeline_overrides(), "+datamodule.target.limit=4"]
    metrics = run_task(compose_cfg(base))
    run = tmp_path / "run"
    names = sorted(p.name for p in run.iterdir() if p.is_dir())
    assert names == ["00_source_only", "01_translator", "02_warmup", "03_pseudolabel", "04_centroids",
                     "05_selftrain", "06_pseudolabel_r2", "07_selftrain_r2", "08_target_supervised"]  # fmt: skip
    assert all((run / n / "DONE.json").is_file() for n in names)
    rows = json.loads((run / "pipeline_results.json").read_text())
    assert list(rows) == ["source-only", "warm-up", "self-training", "refinement 1", "target-supervised (upper bound)"]
    assert len(list((run / "03_pseudolabel" / "pseudo_labels").glob("target_*.png"))) == 4
    assert (run / "04_centroids" / "centroids.pt").is_file()
    out = capsys.readouterr().out
    assert "target mIoU per stage" in out and "self-training" in out
    assert 0 <= metrics["mIoU"] <= 100

    # a second start with the same run directory skips everything that finished and redoes the rest
    stamps = {n: (run / n / "DONE.json").stat().st_mtime_ns for n in names}
    (run / "07_selftrain_r2" / "DONE.json").unlink()  # as if killed after its last checkpoint
    (run / "06_pseudolabel_r2" / "DONE.json").unlink()  # as if killed after writing 3 of 4 pseudo-labels
    first_pl = sorted((run / "06_pseudolabel_r2" / "pseudo_labels").glob("target_*.png"))[0]
    first_pl.unlink()
    caplog.clear()
    with caplog.at_level("INFO"):
        run_task(compose_cfg(base))
    assert "pseudo-labels: 1 of 4 images to predict" in caplog.text
    assert "resuming selftrain_r2 from its last checkpoint" in caplog.text
    assert first_pl.is_file()
    stamps.pop("06_pseudolabel_r2")
    for n in stamps:
        changed = (run / n / "DONE.json").stat().st_mtime_ns != stamps[n] if n != "07_selftrain_r2" else True
        assert changed == (n == "07_selftrain_r2"), n
    assert (run / "07_selftrain_r2" / "DONE.json").is_file()


@pytest.mark.slow
def test_fixed_threshold_pseudo_labels(tmp_path: Path, toy_root: Path, trained_toy_run: Path) -> None:
    """The comparison baseline: a confidence threshold leaves low-confidence pixels unlabelled (255)."""
    import numpy as np
    from PIL import Image

    base = tiny_toy_overrides(tmp_path, toy_root.parent)
    model = trained_toy_run / "final_model.pt"
    out = run_task(compose_cfg([*base, "stage=pseudolabel", f"stage.init_from={model}",
                                "stage.confidence_threshold=0.99", TINY_PSEUDO_LABELS,
                                f"paths.output_dir={tmp_path}/pl"]))  # fmt: skip
    assert out["kept_fraction"] < 1.0
    pngs = sorted((tmp_path / "pl" / "pseudo_labels").glob("*.png"))
    assert len(pngs) == 8
    assert any((np.asarray(Image.open(p)) == 255).any() for p in pngs)
    assert Image.open(pngs[0]).mode == "P"  # palettised like the reference's pseudo-labels


@pytest.mark.slow
def test_step_cache_computes_shared_steps_once(tmp_path: Path, toy_root: Path, caplog) -> None:
    """Two pipelines that differ only after the warm-up (e.g. two ablation rows) share its steps through the cache."""
    cache = tmp_path / "cache"
    base = [*tiny_toy_overrides(tmp_path, toy_root.parent), *tiny_pipeline_overrides(refine_rounds=0),
            f"stage.step_cache={cache}", "stage.baseline=false", "stage.oracle=false",
            "stage.translator=fourier"]  # fmt: skip
    run_task(compose_cfg([*base, "run_id=a", f"paths.output_dir={tmp_path}/a"]))
    caplog.clear()
    with caplog.at_level("INFO"):
        run_task(compose_cfg([*base, "run_id=b", f"paths.output_dir={tmp_path}/b",
                              "++stage.step_overrides.selftrain=['stage.module.pl_selection=offline']"]))  # fmt: skip
    done = {name for name in ("warmup", "pseudolabel", "centroids") if f"{name} already done" in caplog.text}
    assert done == {"warmup", "pseudolabel", "centroids"}
    assert "running selftrain" in caplog.text  # a different self-training: computed
    a, b = (tmp_path / r / "00_warmup" for r in ("a", "b"))
    assert a.is_symlink() and b.resolve() == a.resolve()
    assert (tmp_path / "b" / "03_selftrain").resolve() != (tmp_path / "a" / "03_selftrain").resolve()
