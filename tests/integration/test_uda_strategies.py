"""DAFormer's and MIC's strategies in the harness at tiny size: the DAFormer/MIC stage, and RCS + FD + MIC in DiGA."""

from __future__ import annotations

from pathlib import Path

import pytest

from diga.tasks import run_task
from tests.helpers import compose_cfg, tiny_pipeline_overrides, tiny_toy_overrides

RCS = "datamodule.source.loader.rare_class_sampling={temperature:0.01,min_pixels:3000,min_crop_ratio:0.5}"
MIC = "stage.module.masked_consistency={weight:1.0,mask_ratio:0.7,block_size:8}"


def test_daformer_and_mic_stage_runs_with_rcs(tmp_path: Path, toy_root: Path, caplog) -> None:
    base = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=2), "stage=daformer", RCS, MIC]
    base.append("trainer.log_every_n_steps=1")
    with caplog.at_level("INFO"):
        metrics = run_task(compose_cfg(base))
    assert 0 <= metrics["mIoU"] <= 100
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"train/loss_mix", "train/loss_mic", "train/loss_fd", "train/pl_confident"} <= logged


@pytest.mark.slow
def test_diga_with_rcs_fd_and_mic(tmp_path: Path, toy_root: Path) -> None:
    fd = "stage.module.feature_distance.weight=0.005"
    overrides = [*tiny_toy_overrides(tmp_path, toy_root.parent), *tiny_pipeline_overrides(refine_rounds=0),
                 "stage.baseline=false", "stage.oracle=false", "stage.translator=fourier",
                 f"++stage.step_overrides.warmup=['{RCS}','{fd}']",
                 f"++stage.step_overrides.selftrain=['{RCS}','{fd}','{MIC}']"]  # fmt: skip
    metrics = run_task(compose_cfg(overrides))
    assert 0 <= metrics["mIoU"] <= 100
    assert list((tmp_path / "run").glob("03_selftrain/csv/metrics.csv"))
