"""The training and offline stages on CUDA. Run with `make test-gpu` on a machine with a GPU (`make gpu-smoke` is the
wider, timed check); on CPU-only machines (CI) every test here is skipped, and the CPU suite covers what a CPU can
show (`tests/unit/test_precision.py`, `tests/unit/test_device_placement.py`, `tests/integration/test_host_syncs.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

import diga.tasks.fit as fit
from diga.callbacks.host_syncs import CountStepSyncs
from diga.tasks import run_task
from tests.helpers import (
    TINY_PSEUDO_LABELS,
    TRAINING_STAGES,
    compose_cfg,
    run_if,
    tiny_toy_overrides,
    training_stage_overrides,
)

pytestmark = [pytest.mark.gpu, run_if(min_cuda_gpus=1)]
GPU = ["trainer=gpu", "trainer.benchmark=false", "log_images_every=0"]
PRECISIONS = ["32-true", "bf16-mixed", "16-mixed"]


def _finite(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = state["state_dict"] if "state_dict" in state else {**state["enc_s"], **state["dec_s2t"]}
    return all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_every_training_stage_trains_on_cuda_in_each_precision(
    stage: str, precision: str, tmp_path: Path, toy_root: Path, selftrain_inputs: tuple[Path, Path]
) -> None:
    if precision.startswith("bf16") and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no bfloat16")
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=3), *GPU, f"trainer.precision={precision}",
                       *training_stage_overrides(stage, selftrain_inputs)])  # fmt: skip
    metrics = run_task(cfg)
    assert _finite(tmp_path / "run" / ("translator.pt" if stage == "translator" else "final_model.pt"))
    if stage != "translator":
        assert 0 <= metrics["mIoU"] <= 100


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_cuda_synchronisations_per_step_stay_within_budget(stage: str, tmp_path: Path, toy_root: Path,
                                                           selftrain_inputs: tuple[Path, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The budget of the CPU suite (one non-finite check per optimiser step), as CUDA counts it."""
    probe = CountStepSyncs(steps=(1, 2))  # step 0 warms up the allocator
    original = fit.build_trainer
    monkeypatch.setattr(fit, "build_trainer", lambda c: _append(original(c), probe))
    run_task(
        compose_cfg(
            [
                *tiny_toy_overrides(tmp_path, toy_root.parent, steps=4),
                *GPU,
                *training_stage_overrides(stage, selftrain_inputs),
                "trainer.log_every_n_steps=50",
            ]
        )
    )
    assert len(probe.cuda_syncs) == 2
    assert max(probe.cuda_syncs) <= (2 if stage == "translator" else 1), probe.cuda_syncs


def _append(trainer: pl.Trainer, callback: pl.Callback) -> pl.Trainer:
    trainer.callbacks.append(callback)
    return trainer


class _BatchNormStats(pl.Callback):
    """Each rank saves its BatchNorm running statistics and whether its model holds torch's SyncBatchNorm."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stats = {k: v.cpu() for k, v in pl_module.model.state_dict().items() if "running_" in k}
        sync = any(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules())
        torch.save({"stats": stats, "sync": sync}, Path(self.out) / f"bn_rank{trainer.global_rank}.pt")


@run_if(min_cuda_gpus=2)
def test_sync_batchnorm_gives_every_rank_the_same_statistics(tmp_path: Path, toy_root: Path) -> None:
    """`trainer=ddp` converts BatchNorm to SyncBatchNorm: ranks that saw different images end with identical running
    statistics (without it, each rank's would follow its own images)."""
    from hydra.utils import instantiate

    from diga.tasks.fit import build_module

    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=3), "stage=source_only"])
    module = build_module(cfg)
    dm = instantiate(cfg.datamodule, _recursive_=False)
    trainer = pl.Trainer(accelerator="gpu", devices=2, strategy="ddp_spawn", sync_batchnorm=True, max_steps=3,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
                         callbacks=[_BatchNormStats(str(tmp_path))])  # fmt: skip
    trainer.fit(module, datamodule=dm)
    ranks = [torch.load(tmp_path / f"bn_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["sync"] and ranks[1]["sync"]
    assert ranks[0]["stats"], "the model has no BatchNorm to synchronise"
    for k, v in ranks[0]["stats"].items():
        torch.testing.assert_close(v, ranks[1]["stats"][k], msg=k)


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


def test_classwise_pseudo_labels_on_cuda_match_cpu(tmp_path: Path, toy_root: Path, trained_toy_run: Path) -> None:
    """The class-wise thresholds are computed from histograms on the device (a device mismatch crashed them)."""
    base = tiny_toy_overrides(tmp_path, toy_root.parent)
    thresholds = {}
    for dev in ("cpu", "cuda"):
        run_task(compose_cfg([*base, "stage=pseudolabel", TINY_PSEUDO_LABELS, "stage.confidence_threshold=classwise",
                              f"stage.init_from={trained_toy_run / 'final_model.pt'}", f"stage.device={dev}",
                              f"paths.output_dir={tmp_path}/{dev}"]))  # fmt: skip
        saved = tmp_path / dev / "pseudo_labels" / "class_thresholds.json"
        thresholds[dev] = json.loads(saved.read_text())["thresholds"]
    np.testing.assert_allclose(thresholds["cuda"], thresholds["cpu"], atol=2e-3)  # one histogram bin


def test_deterministic_warn_trains_and_repeats_on_cuda(tmp_path: Path, toy_root: Path) -> None:
    """`trainer.deterministic=warn` runs (`true` is refused: bilinear up-sampling has no deterministic backward)."""
    states = []
    for run in ("a", "b"):
        run_task(compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=3), *GPU, "stage=source_only",
                              "trainer.deterministic=warn", f"paths.output_dir={tmp_path / run}"]))  # fmt: skip
        states.append(torch.load(tmp_path / run / "final_model.pt", map_location="cpu", weights_only=True))
    for k, v in states[0]["state_dict"].items():  # bilinear backward adds in any order: equal to float rounding
        torch.testing.assert_close(v, states[1]["state_dict"][k], rtol=1e-4, atol=1e-5, msg=k)
