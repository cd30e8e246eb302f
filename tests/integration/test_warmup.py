"""Short toy runs of the warm-up path: translator → warm-up (learned), warm-up with Fourier, and model selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diga.tasks import run_task
from tests.helpers import compose_cfg, tiny_toy_overrides


@pytest.mark.slow
def test_translator_then_warmup(tmp_path: Path, toy_root: Path) -> None:
    base = tiny_toy_overrides(tmp_path, toy_root.parent)
    run_task(compose_cfg([*base, "stage=translator", f"paths.output_dir={tmp_path}/translator"]))
    tr = tmp_path / "translator" / "translator.pt"
    saved = torch.load(tr, map_location="cpu", weights_only=True)
    assert set(saved) == {"arch", "enc_s", "dec_s2t"} and saved["arch"] == {"width": 16, "n_res": 2}
    ckpt = torch.load(tmp_path / "translator" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2  # iterations, not optimiser steps
    assert any(k.startswith("dis_t2s.") for k in ckpt["state_dict"])  # all six networks kept: resumable

    metrics = run_task(compose_cfg([*base, "stage=warmup", "stage.module.translator.kind=learned",
                                    f"stage.module.translator.checkpoint={tr}",
                                    f"paths.output_dir={tmp_path}/warmup"]))  # fmt: skip
    assert 0 <= metrics["mIoU"] <= 100
    state = torch.load(tmp_path / "warmup" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("teacher.") for k in state["state_dict"])
    assert (tmp_path / "warmup" / "final_model.pt").is_file()


def test_warmup_with_fourier_translator_logs_distillation(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=warmup",
                       "stage.module.translator.kind=fourier", "trainer.log_every_n_steps=1"])  # fmt: skip
    assert cfg.datamodule.use_target  # Fourier translation takes its style from target images
    run_task(cfg)
    metrics_csv = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "train/loss_kd" in metrics_csv and "train/loss_src" in metrics_csv


def test_dg_style_warmup_without_translator_uses_no_target(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg(
        [*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=warmup", "stage.module.translator.kind=none"]
    )
    assert not cfg.datamodule.use_target
    run_task(cfg)


def test_selection_on_target_val_is_opt_in_and_reports_last_too(tmp_path: Path, toy_root: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    base = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=2), "stage=source_only"]
    run_task(compose_cfg([*base, "selection.mode=target_val"]))
    assert "TARGET VALIDATION LABELS" in caplog.text
    assert (tmp_path / "run" / "results_last.json").is_file()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["toy_target"]["mIoU"] >= 0
    with pytest.raises(ValueError, match="source_set"):
        run_task(compose_cfg([*base, "selection.mode=source_val", "overwrite=true"]))
