"""The new encoder families through the method's stages at tiny size, random init: DINOv2 (pyramid over a ViT),
HRNet-W48 + OCR (auxiliary logits in every loss), and a generic timm CNN from one YAML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diga.tasks import run_task
from diga.tasks.fit import build_module
from tests.helpers import compose_cfg, tiny_pipeline_overrides, tiny_toy_overrides


def _vit(tmp_path: Path, toy_root: Path, steps: int = 2) -> list[str]:
    return [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=steps), "model=dinov2_vit_s"]


@pytest.mark.slow(seconds=50)
def test_dinov2_runs_the_whole_toy_pipeline_and_exports(tmp_path: Path, toy_root: Path) -> None:
    from diga.export import export_onnx

    metrics = run_task(compose_cfg([*_vit(tmp_path, toy_root), *tiny_pipeline_overrides(refine_rounds=0)]))
    run = tmp_path / "run"
    assert 0 <= metrics["mIoU"] <= 100 and len(list(run.glob("*/DONE.json"))) == 7
    c = torch.load(run / "04_centroids" / "centroids.pt", weights_only=True)["centroids"]
    assert c.shape == (7, 256)  # DAFormer head feature on the ViT pyramid
    assert export_onnx(run / "05_selftrain" / "final_model.pt", tmp_path / "vit.onnx", height=32, width=64) < 1e-3


def test_layer_decay_splits_the_vit_into_decaying_groups(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg([*_vit(tmp_path, toy_root), "stage=source_only", "+optimizer.layer_decay=0.9"])
    module = build_module(cfg)
    groups = module.param_groups()["backbone"]
    scales = [g["lr_scale"] for g in groups]
    assert max(scales) == 1.0 and min(scales) == pytest.approx(0.9**13)  # embeddings = layer 0 of 12 blocks + top
    from diga.modules.optim import build_optimizer

    opt = build_optimizer(dict(module.hparams.optimizer), module.param_groups())
    n_params = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_params == sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    head = next(g for g in opt.param_groups if g["name"] == "head")
    assert head["lr"] == pytest.approx(6e-4 * 10)


def test_hrnet_ocr_aux_logits_enter_the_losses(tmp_path: Path, toy_root: Path) -> None:
    base = [
        *tiny_toy_overrides(tmp_path, toy_root.parent, steps=2),
        "model=hrnet48_ocr",
        "stage=warmup",
        "model.backbone.name=hrnet_w18_small",
        "stage.module.translator.kind=none",
    ]  # W48's code, smaller
    run_task(compose_cfg(base))
    a = json.loads((tmp_path / "run" / "results.json").read_text())["toy_target"]["mIoU"]
    cfg = compose_cfg([*base, "stage.module.aux_weight=0.0", f"paths.output_dir={tmp_path}/no_aux"])
    run_task(cfg)
    b = torch.load(tmp_path / "no_aux" / "final_model.pt", weights_only=True)["state_dict"]
    with_aux = torch.load(tmp_path / "run" / "final_model.pt", weights_only=True)["state_dict"]
    aux_keys = [k for k in b if k.startswith("head.aux_head")]
    assert aux_keys and not all(torch.equal(b[k], with_aux[k]) for k in aux_keys)  # the aux head was trained
    assert 0 <= a <= 100


def test_a_timm_cnn_is_one_yaml(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=1), "model=convnext_daformer",
                       "model.backbone.model_name=convnext_atto", "stage=source_only"])  # fmt: skip
    assert 0 <= run_task(cfg)["mIoU"] <= 100
