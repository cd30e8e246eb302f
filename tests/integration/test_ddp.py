"""2-process CPU DDP (gloo): self-training keeps the online centroids identical on every rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from diga.centroids import save_centroids
from diga.data.datasets import ToyDataset
from diga.data.io import save_label_png
from diga.tasks.fit import build_module
from tests import fakes
from tests.helpers import compose_cfg, tiny_toy_overrides


class DumpCentroids(pl.Callback):
    """Each rank writes its centroids after training (picklable for ddp_spawn)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        r = trainer.global_rank
        torch.save(pl_module.centroids.cpu(), Path(self.out) / f"centroids_rank{r}.pt")
        torch.save(
            {k: v.cpu() for k, v in pl_module.teacher.state_dict().items()}, Path(self.out) / f"teacher_rank{r}.pt"
        )
        torch.save(
            {k: v.cpu() for k, v in pl_module.model.state_dict().items()}, Path(self.out) / f"student_rank{r}.pt"
        )


class DumpMetrics(pl.Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save(pl_module.last_val_results, Path(self.out) / f"val_rank{trainer.global_rank}.pt")


@pytest.mark.ddp
@pytest.mark.slow
def test_selftrain_centroids_identical_across_ranks(tmp_path: Path, toy_root: Path) -> None:
    pl_dir = tmp_path / "pl"
    ds = ToyDataset(toy_root, domain="target", split="train", spec=fakes.TINY_TOY, with_labels=False)
    rng = np.random.default_rng(0)
    for s in ds.samples:  # arbitrary but fixed pseudo-labels
        save_label_png(pl_dir / f"{s.name}.png", rng.integers(0, 7, (32, 64)).astype(np.uint8))
    start = torch.randn(7, 256)
    save_centroids(tmp_path / "centroids.pt", start, torch.ones(7), "toy")
    overrides = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=3), "stage=selftrain", "translator.kind=fourier",
                 f"pseudo_label_dir={pl_dir}", f"centroids_path={tmp_path / 'centroids.pt'}", "stage.init_from=null",
                 "stage.module.centroid_momentum=0.2"]  # fmt: skip
    cfg = compose_cfg(overrides)
    module = build_module(cfg)
    dm = instantiate(cfg.datamodule, _recursive_=False)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=3, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, callbacks=[DumpCentroids(str(tmp_path))])  # fmt: skip
    trainer.fit(module, datamodule=dm)
    c0 = torch.load(tmp_path / "centroids_rank0.pt", weights_only=True)
    c1 = torch.load(tmp_path / "centroids_rank1.pt", weights_only=True)
    assert not torch.allclose(c0, start), "centroids were never updated"
    torch.testing.assert_close(c0, c1, rtol=0, atol=0)
    for name in ("teacher", "student"):  # EMA teacher and student parameters stay identical on every rank
        s0 = torch.load(tmp_path / f"{name}_rank0.pt", weights_only=True)
        s1 = torch.load(tmp_path / f"{name}_rank1.pt", weights_only=True)
        for k, v in s0.items():
            if "running_" not in k and "num_batches" not in k:  # BN statistics are per-rank without SyncBN
                torch.testing.assert_close(v, s1[k], rtol=0, atol=0, msg=f"{name}.{k}")


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_validation_equals_single_process(tmp_path: Path, toy_root: Path) -> None:
    """The confusion matrix is summed over ranks: 2-process validation gives the single-process numbers."""
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only",
                       "datamodule.val_batch_size=1"])  # fmt: skip
    results = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        module = build_module(cfg)
        torch.manual_seed(0)
        module.model.load_state_dict(build_module(cfg).model.state_dict())  # same weights for both runs
        if devices == 1:
            reference = {k: v.clone() for k, v in module.model.state_dict().items()}
        else:
            module.model.load_state_dict(reference)
        dm = instantiate(cfg.datamodule, _recursive_=False)
        trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[DumpMetrics(str(tmp_path))])  # fmt: skip
        trainer.validate(module, datamodule=dm, verbose=False)
        results[devices] = torch.load(tmp_path / "val_rank0.pt", weights_only=False)
    single, ddp = results[1]["toy_target"], results[2]["toy_target"]
    assert ddp["mIoU"] == pytest.approx(single["mIoU"], abs=1e-6)
    assert ddp["aAcc"] == pytest.approx(single["aAcc"], abs=1e-6)
