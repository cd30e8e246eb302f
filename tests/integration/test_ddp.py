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
        torch.save(pl_module.centroids.cpu(), Path(self.out) / f"centroids_rank{trainer.global_rank}.pt")


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
