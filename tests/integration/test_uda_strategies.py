"""DAFormer's and MIC's strategies in the harness at tiny size: the DAFormer/MIC stage, and RCS + FD + MIC in DiGA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


def test_sequential_backward_gives_the_summed_gradient_holding_one_pass(tmp_path: Path, toy_root: Path) -> None:
    """DAFormer's order (source, class-mix, MIC each back-propagated in turn) changes memory, not the gradient."""
    from hydra.utils import instantiate

    from diga.data.datamodule import merge_streams, widen_labels
    from diga.tasks.fit import build_module

    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=daformer", MIC,
                       "stage.module.feature_distance.weight=0.005"])  # fmt: skip
    module = build_module(cfg)
    datamodule = instantiate(cfg.datamodule, _recursive_=False)
    datamodule.setup("fit")
    streams, _, _ = next(iter(datamodule.train_dataloader()))  # CombinedLoader: (batch, batch_idx, loader_idx)
    batch = widen_labels(merge_streams(streams))  # what the datamodule hands the module during training

    def gradients(sequential: bool) -> tuple[dict[str, torch.Tensor], float, int]:
        module.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the photometric draws and drop-path: the same in both orders
        if sequential:
            total, n = 0.0, 0
            for losses in module.loss_phases(batch):
                losses["loss"].backward()
                total, n = total + float(losses["loss"]), n + 1
        else:
            loss = module.step_losses(batch)["loss"]
            loss.backward()
            total, n = float(loss), 1
        grads = {k: p.grad.clone() for k, p in module.model.named_parameters() if p.grad is not None}
        return grads, total, n

    seq, seq_loss, passes = gradients(sequential=True)
    summed, summed_loss, _ = gradients(sequential=False)
    assert passes == 3, "source (+ FD), class-mix and MIC are three backward passes"
    assert seq.keys() == summed.keys() and seq
    assert seq_loss == pytest.approx(summed_loss, rel=1e-6)
    for k in seq:
        torch.testing.assert_close(seq[k], summed[k], rtol=1e-5, atol=1e-7, msg=k)
    assert module.grad_forwards_per_image == 1 and not module.automatic_optimization
    module.hparams.sequential_backward = False
    assert module.grad_forwards_per_image == 3, "summed: the source, class-mix and MIC graphs are held together"
    assert len(list(module.loss_phases(batch))) == 1, "summed is one backward pass, also on the manual path"


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


HRDA_TOY = [
    "toy_spec={height:128,width:256,source_train:4,source_val:2,target_train:4,target_val:2}",
    "datamodule.crop_size=[128,128]",
    "model.hrda={hr_crop_size:[64,64],context_scale:0.5,crop_divisible:8,detail_loss_weight:0.1,attention:{embed_dim:16}}",
    "inference=slide",
    "inference.crop_size=[128,128]",
    "inference.stride=[64,64]",
    "inference.batched=true",
    "datamodule.target.loader.pseudo_margins=[4,24,4,4]",  # HRDA's Cityscapes margins, scaled to the toy
]


@pytest.mark.parametrize("masked", [False, True], ids=["hrda", "mic_hrda"])
def test_hrda_and_mic_hrda_train_on_the_multi_resolution_model(masked: bool, tmp_path: Path) -> None:
    """DAFormer's (and MIC's) self-training on HRDA: the context, a detail window, the scale attention and their
    fused loss train together; validation slides windows (one at a time on the CPU), each window HRDA's multi-resolution
    forward."""
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, tmp_path / "data", steps=2), "stage=daformer", *HRDA_TOY,
                       *([MIC] if masked else []), "trainer.log_every_n_steps=1"])  # fmt: skip
    metrics = run_task(cfg)
    assert 0 <= metrics["mIoU"] <= 100
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"train/loss_src", "train/loss_mix"} <= logged and (("train/loss_mic" in logged) == masked)
    saved = torch.load(tmp_path / "run" / "final_model.pt", weights_only=True)
    assert saved["model_cfg"]["hrda"]["hr_crop_size"] == [64, 64]
    assert any(k.startswith("attention.") for k in saved["state_dict"])


def test_diga_runs_on_the_multi_resolution_model(tmp_path: Path) -> None:
    """DiGA + HRDA: warm-up (both views share one detail window), offline pseudo-labels and centroids from the
    multi-resolution prediction (context features), self-training with consensus and class-mix on HRDA."""
    overrides = [*tiny_toy_overrides(tmp_path, tmp_path / "data"), *HRDA_TOY, *tiny_pipeline_overrides(refine_rounds=0),
                 "stage.baseline=false", "stage.oracle=false", "stage.translator=fourier"]  # fmt: skip
    metrics = run_task(compose_cfg(overrides))
    assert 0 <= metrics["mIoU"] <= 100
    centroids = torch.load(next((tmp_path / "run").glob("*_centroids/centroids.pt")), weights_only=True)
    assert centroids["centroids"].shape[1] == 256  # the context features of the DAFormer head (MiT-B0 default)
    final = torch.load(next((tmp_path / "run").glob("*_selftrain/final_model.pt")), weights_only=True)
    assert final["model_cfg"]["hrda"] is not None


def test_the_memory_estimate_of_hrda_keeps_the_detail_windows_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-flight probe runs at half the crop: HRDA's detail window must shrink with it, or the estimate would
    count a full-size window on a half-size probe (2.5× too much at the authors' sizes). The student's graphs only:
    the teacher's forward is tested in tests/unit/test_memory.py."""
    from diga.modules.daformer import DAFormerModule
    from diga.tasks.fit import build_module

    monkeypatch.setattr(DAFormerModule, "teacher_images", lambda self, source, target: 0)

    base = [*tiny_toy_overrides(tmp_path, tmp_path / "data"), "stage=daformer", *HRDA_TOY,
            "stage.module.feature_distance.weight=0", "stage.module.sequential_backward=false"]  # fmt: skip
    multi, single = build_module(compose_cfg(base)), build_module(compose_cfg([*base, "model.hrda=null"]))
    ratio = {c: multi.estimate_memory((c, c), 2, 2).activations / single.estimate_memory((c, c), 2, 2).activations
             for c in (128, 512)}  # fmt: skip
    # a 64×64 window of a 128×128 crop: context (a quarter of the pixels) + detail (a quarter) ≈ half, plus attention
    assert 0.4 < ratio[128] < 0.8, ratio
    assert ratio[512] < ratio[128]  # the same window in a larger crop is a smaller share of it
