"""The training and offline stages on CUDA: bf16-mixed training, synchronised BatchNorm, pseudo-labels and centroids.

Run with `make test-gpu` on a machine with a GPU; on CPU-only machines (CI) every test here is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from diga.tasks import run_task
from tests.helpers import TINY_PSEUDO_LABELS, compose_cfg, run_if, tiny_toy_overrides

pytestmark = [pytest.mark.gpu, run_if(min_cuda_gpus=1)]
GPU = ["trainer=gpu", "trainer.benchmark=false"]


@pytest.mark.parametrize("stage", ["source_only", "warmup"])
def test_bf16_mixed_training_on_cuda(stage: str, tmp_path: Path, toy_root: Path) -> None:
    extra = ["stage.module.translator.kind=fourier"] if stage == "warmup" else []
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=3), *GPU, f"stage={stage}",
                       "trainer.precision=bf16-mixed", *extra])  # fmt: skip
    metrics = run_task(cfg)
    assert 0 <= metrics["mIoU"] <= 100
    state = torch.load(tmp_path / "run" / "final_model.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


class _SawSyncBN(pl.Callback):
    found = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        _SawSyncBN.found |= any(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules())


def test_sync_batchnorm_under_ddp_on_cuda(tmp_path: Path, toy_root: Path) -> None:
    import diga.tasks.fit as fit

    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=2), "trainer=ddp", "trainer.devices=1",
                       "trainer.strategy=ddp_spawn", "stage=source_only"])  # fmt: skip
    original = fit.build_trainer

    def with_probe(c):
        trainer = original(c)
        trainer.callbacks.append(_SawSyncBN())
        return trainer

    fit.build_trainer = with_probe
    try:
        run_task(cfg)
    finally:
        fit.build_trainer = original
    assert json.loads((tmp_path / "run" / "results.json").read_text())["toy_target"]["mIoU"] >= 0


def test_offline_stages_on_cuda_match_cpu(tmp_path: Path, toy_root: Path, trained_toy_run: Path) -> None:
    from diga.centroids import load_centroids

    base = tiny_toy_overrides(tmp_path, toy_root.parent)
    model = trained_toy_run / "final_model.pt"
    for dev in ("cpu", "cuda"):
        common = [*base, f"stage.init_from={model}", f"stage.device={dev}", f"paths.output_dir={tmp_path}/{dev}"]
        run_task(compose_cfg([*common, "stage=pseudolabel", TINY_PSEUDO_LABELS]))
        run_task(compose_cfg([*common, "stage=centroids"]))
    for png in sorted((tmp_path / "cpu" / "pseudo_labels").glob("*.png")):
        a = np.asarray(Image.open(png))
        b = np.asarray(Image.open(tmp_path / "cuda" / "pseudo_labels" / png.name))
        assert (a == b).mean() > 0.999, png.name  # argmax ties may flip under different kernels
    c_cpu = load_centroids(tmp_path / "cpu" / "centroids.pt", 7, 256)
    c_gpu = load_centroids(tmp_path / "cuda" / "centroids.pt", 7, 256)
    torch.testing.assert_close(c_gpu, c_cpu, atol=1e-3, rtol=1e-3)
