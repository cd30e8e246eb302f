"""W&B in offline mode: no network, no prompt; the run's files hold losses, mIoU and prediction images."""

from __future__ import annotations

from pathlib import Path

import pytest

from diga.tasks import run_task
from tests.helpers import compose_cfg, tiny_toy_overrides


def test_offline_wandb_run_is_written(tmp_path: Path, toy_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=warmup",
                       "stage.module.translator.kind=fourier", "logger=wandb", "trainer.log_every_n_steps=1",
                       "log_images_every=1"])  # fmt: skip
    try:
        run_task(cfg)
    finally:
        import wandb

        wandb.finish()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "expected exactly one offline run directory"
    run_dir = runs[0]
    (data_file,) = run_dir.glob("run-*.wandb")
    # the run file is a log of protobuf records; history keys are stored as plain UTF-8 strings
    raw = data_file.read_bytes()
    wanted = (
        "train/loss",
        "train/loss_kd",
        "val/toy_target/mIoU",
        "val/mIoU",
        "val/predictions",
        "train/views",
        "val/per_class_iou",
        "val/confusion_matrix",
    )
    keys = {k for k in wanted if k.encode() in raw}
    assert "train/loss" in keys and "val/toy_target/mIoU" in keys and "val/mIoU" in keys
    assert "val/predictions" in keys, "no prediction images logged"
    assert "train/views" in keys and "train/loss_kd" in keys, "warm-up views / distillation loss not logged"
    assert "val/per_class_iou" in keys and "val/confusion_matrix" in keys, "per-class table / confusion matrix missing"
    assert list((run_dir / "files" / "media" / "table").rglob("*.table.json")), "per-class IoU table file missing"
    assert list((run_dir / "files" / "media" / "images").rglob("*.png")), "image files missing"
