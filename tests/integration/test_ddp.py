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
from tests.helpers import (
    TINY_PSEUDO_LABELS,
    compose_cfg,
    tiny_pipeline_overrides,
    tiny_toy_overrides,
    training_stage_overrides,
)


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
        torch.save({"results": pl_module.last_val_results, "confmats": pl_module.last_val_confmats},
                   Path(self.out) / f"val_rank{trainer.global_rank}.pt")  # fmt: skip


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
    overrides = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=3), "stage=selftrain",
                 "stage.module.translator.kind=fourier", f"stage.pseudo_labels={pl_dir}",
                 f"stage.centroids={tmp_path / 'centroids.pt'}", "stage.init_from=null",
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
    """The confusion matrix is summed over ranks: 2-process validation of an odd-sized set (3 images) gives the
    single-process confusion matrix exactly — no image is repeated to even out the ranks."""
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only",
                       "datamodule.val_batch_size=1", "+datamodule.val.toy_target.limit=3"])  # fmt: skip
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
    single, ddp = results[1]["confmats"]["toy_target"], results[2]["confmats"]["toy_target"]
    assert 0 < single.sum() <= 3 * 32 * 64  # the labelled pixels of the 3 images
    assert torch.equal(ddp, single), f"{int(ddp.sum())} pixels scored by 2 processes, {int(single.sum())} by one"
    assert results[2]["results"]["toy_target"]["mIoU"] == pytest.approx(results[1]["results"]["toy_target"]["mIoU"])


def _counting_allreduce(state, bucket):  # no annotations: DDP checks a hook's annotations at run time
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    state.rounds += int(bucket.is_last())  # one round of bucket all-reduces per synchronised backward pass
    return allreduce_hook(None, bucket)


class CountGradientSyncs(pl.Callback):
    """Counts the backward passes whose gradients DDP all-reduces (a comm hook on the DDP model)."""

    def __init__(self, out: str) -> None:
        self.out, self.rounds = out, 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.strategy.model.register_comm_hook(state=self, hook=_counting_allreduce)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        weights = {k: v.cpu() for k, v in pl_module.model.state_dict().items() if "running_" not in k}
        torch.save({"rounds": self.rounds, "steps": trainer.global_step, "weights": weights},
                   Path(self.out) / f"syncs_rank{trainer.global_rank}.pt")  # fmt: skip


@pytest.mark.ddp
@pytest.mark.slow
def test_one_gradient_all_reduce_per_step_with_sequential_passes_and_micro_batches(tmp_path: Path,
                                                                                 toy_root: Path) -> None:  # fmt: skip
    """DAFormer + MIC + FD back-propagates three passes per micro-batch, two micro-batches: six backward passes per
    step, of which only the last all-reduces (DDP's no_sync on the others) — and the ranks still end with the same
    weights, so the accumulated gradients were synchronised."""
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=2), *training_stage_overrides("daformer"),
                       "stage.module.micro_batches=2", "model.backbone.drop_path_rate=0",
                       "model.head.dropout=0"])  # fmt: skip
    module = build_module(cfg)
    assert module.loss_phase_count() == 3
    dm = instantiate(cfg.datamodule, _recursive_=False)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, callbacks=[CountGradientSyncs(str(tmp_path))])  # fmt: skip
    trainer.fit(module, datamodule=dm)
    ranks = [torch.load(tmp_path / f"syncs_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for r in ranks:
        assert r["steps"] == 2 and r["rounds"] == 2, r["rounds"]  # 12 backward passes, 2 all-reduces
    for k, v in ranks[0]["weights"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v, ranks[1]["weights"][k], rtol=0, atol=0, msg=k)


@pytest.mark.ddp
@pytest.mark.slow
def test_offline_stages_on_two_processes_equal_one(tmp_path: Path, toy_root: Path) -> None:
    """Pseudo-labels and centroids from 2 gloo processes (each half of the images) equal the single-process ones."""
    from diga.centroids import load_centroids
    from diga.tasks import run_task

    base = tiny_toy_overrides(tmp_path, toy_root.parent)
    model_path = build_module(compose_cfg([*base, "stage=source_only"])).export(tmp_path)
    ddp = ["trainer.strategy=ddp_spawn", "trainer.devices=2"]
    for name, extra in (("single", []), ("ddp", ddp)):
        common = [*base, *extra, f"stage.init_from={model_path}", f"paths.output_dir={tmp_path / name}"]
        run_task(compose_cfg([*common, "stage=pseudolabel", TINY_PSEUDO_LABELS]))
        run_task(compose_cfg([*common, "stage=centroids"]))
    single, two = tmp_path / "single" / "pseudo_labels", tmp_path / "ddp" / "pseudo_labels"
    names = sorted(p.name for p in single.glob("*.png"))
    assert len(names) == 8 and names == sorted(p.name for p in two.glob("*.png"))
    for n in names:
        assert (single / n).read_bytes() == (two / n).read_bytes(), n
    assert (two / "manifest.json").is_file()
    c1 = load_centroids(tmp_path / "single" / "centroids.pt", 7, 256)
    c2 = load_centroids(tmp_path / "ddp" / "centroids.pt", 7, 256)
    assert c1.abs().sum() > 0
    # the per-class sums are all-reduced over ranks: float32 addition in another order (measured up to 1.7e-7)
    torch.testing.assert_close(c2, c1, rtol=1e-5, atol=1e-6)


def _cli(args: list[str], cwd: Path) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "diga.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


CPU_DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]  # gloo, SyncBN via the all-reduce BN


@pytest.mark.ddp
@pytest.mark.slow(seconds=45)
@pytest.mark.parametrize("model", ["segformer_b0", "dinov2_vit_s"])
def test_ddp_training_equals_single_process(tmp_path: Path, toy_root: Path, model: str) -> None:
    """`trainer=ddp` on 2 processes × batch 2 trains the model that 1 process × batch 4 trains (MiT and ViT).

    Same global batch: the step sampler gives the 2 ranks the two halves of the single process's batch, with the
    same per-image augmentation; BatchNorm is synchronised; CE is normalised by all pixels so averaging the
    ranks' gradients is the global gradient. Drop-path/dropout are off (their masks are drawn per rank).
    """
    import json

    base = [o for o in tiny_toy_overrides(tmp_path, toy_root.parent, steps=4) if "loader.streams" not in o]
    # SGD: Adam's first steps are ±lr for any gradient, so float-order noise in near-zero gradients would show
    base += [
        "stage=source_only",
        f"model={model}",
        "model.pretrained=null",
        "model.backbone.drop_path_rate=0",
        "model.head.dropout=0",
        "logger=none",
        "seed=3",
        "optimizer._target_=torch.optim.SGD",
        "optimizer.lr=0.05",
        "+optimizer.momentum=0.9",
    ]
    runs = {"single": ["datamodule.source.loader.streams=[{resize:null,batch_size:4}]"],
            "ddp": [*CPU_DDP, "datamodule.source.loader.streams=[{resize:null,batch_size:2}]"]}  # fmt: skip
    for name, extra in runs.items():
        _cli([*base, *extra, f"paths.output_dir={tmp_path / name}"], cwd=tmp_path)
    single, ddp = (torch.load(tmp_path / n / "final_model.pt", weights_only=False)["state_dict"] for n in runs)
    init = build_module(compose_cfg([*base, "seed=3"])).model.state_dict()
    floats = [k for k in single if single[k].is_floating_point()]
    moved = max((single[k] - init[k]).abs().max().item() for k in floats if "running" not in k)
    gap = max((single[k] - ddp[k]).abs().max().item() for k in floats)
    assert moved > 1e-3, "training did not change the weights"
    assert gap < 1e-4 * max(moved, 1.0), f"DDP weights differ from single-process by {gap} (training moved {moved})"
    r_single, r_ddp = (json.loads((tmp_path / n / "results.json").read_text())["toy_target"] for n in runs)
    assert r_ddp["mIoU"] == pytest.approx(r_single["mIoU"], abs=0.05)
    assert r_ddp["aAcc"] == pytest.approx(r_single["aAcc"], abs=0.05)


@pytest.mark.ddp
@pytest.mark.slow(seconds=80)
def test_whole_pipeline_under_cli_ddp(tmp_path: Path, toy_root: Path) -> None:
    """`python -m diga.train stage=pipeline trainer=ddp` on 2 CPU processes: every stage runs on both ranks."""
    import json

    base = tiny_toy_overrides(tmp_path, toy_root.parent)
    out = _cli([*base, *CPU_DDP, *tiny_pipeline_overrides(refine_rounds=0), "logger=csv"], cwd=tmp_path)
    run = tmp_path / "run"
    assert "(rank 1 of 2)" in out  # the pseudo-label stage ran on the second process too
    assert len(list(run.glob("*/DONE.json"))) == 7
    assert len(list((run / "03_pseudolabel" / "pseudo_labels").glob("*.png"))) == 8
    rows = json.loads((run / "pipeline_results.json").read_text())
    assert set(rows) == {"source-only", "warm-up", "self-training", "target-supervised (upper bound)"}
    # the stage on its own: Fabric launches the second process itself; same model → the same files
    warmup = run / "02_warmup" / "final_model.pt"
    out = _cli([*base, *CPU_DDP, "stage=pseudolabel", f"stage.init_from={warmup}",
                TINY_PSEUDO_LABELS, f"paths.output_dir={tmp_path / 'pl'}"], cwd=tmp_path)  # fmt: skip
    assert "(rank 1 of 2)" in out
    for png in (run / "03_pseudolabel" / "pseudo_labels").glob("*.png"):
        assert (tmp_path / "pl" / "pseudo_labels" / png.name).read_bytes() == png.read_bytes(), png.name
