"""HRNet-W48 + OCR against the authors' semi-supervised model (`DiGA/semi-supervised_segmentation/model/`).

The reference `SegModel` (model_hr.py) is built from its own `config_default.yaml`; its weights are randomised and
its BN statistics calibrated on the test input (so that eval-mode activations are O(1) and a 1e-5 tolerance means
something), then copied into ours through the weight loaders — and, the other way round, an official-format file
written from our encoder is loaded by the reference's own (positional) loader.
"""

from __future__ import annotations

import copy
import os
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from diga.models.backbones.hrnet import HRNetBackbone, hrnet_to_timm
from diga.models.heads.ocr import OCRHead, ocr_authors_to_diga
from tests.reference.util import load_module, reference_checkout

pytestmark = pytest.mark.reference

TOL = 1e-5
_PKG = "diga_ref_semi_model"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """HRNet is hundreds of small convs: on a shared 2-core machine two OpenMP threads spin against other work
    (≈100× slower than one thread here), so these tests run single-threaded."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def ref() -> types.ModuleType:
    """The reference `model_hr` module (SegModel), imported with its relative imports resolved to stubs."""
    root = reference_checkout("DiGA") / "semi-supervised_segmentation"
    hrnet = load_module(root / "model/networks/hrnet_module.py", f"{_PKG}_hrnet_module")
    ocrnet = load_module(root / "model/networks/ocrnet_module.py", f"{_PKG}_ocrnet_module")
    util = load_module(root / "model/model_util.py", f"{_PKG}.model_util")
    package = types.ModuleType(_PKG)
    package.__path__ = []  # a package, so `from .model_util import *` resolves against the stubs
    networks = types.ModuleType(f"{_PKG}.networks")
    networks.HRNet, networks.OCRNet = hrnet.HRNet, ocrnet.OCRNet
    # model_hr.py calls `yaml.load(cfg)` without a Loader (an error since PyYAML 6): give it one
    yaml_shim = types.ModuleType("yaml")
    yaml_shim.load = lambda stream, Loader=None: yaml.safe_load(stream)
    cwd = os.getcwd()
    os.chdir(root)  # the config path in model_hr.py is relative to the working directory
    try:
        module = load_module(
            root / "model/model_hr.py",
            f"{_PKG}.model_hr",
            stubs={_PKG: package, f"{_PKG}.model_util": util, f"{_PKG}.networks": networks, "yaml": yaml_shim},
        )
    finally:
        os.chdir(cwd)
    module.hrnet_module = hrnet
    return module


def _build_ref(ref: types.ModuleType, pretrained: str | Path = "") -> nn.Module:
    config = copy.deepcopy(ref.config)
    config["HRNET_MODEL"]["PRETRAINED"] = str(pretrained)  # "" → random init (never the cwd-relative default)
    saved, ref.config = ref.config, config
    try:
        return ref.SegModel()
    finally:
        ref.config = saved


def _randomise(model: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    """Random convs and BN affine, then BN running stats = the statistics of `x` (one train pass, momentum 1)."""
    torch.manual_seed(seed)
    bns = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
            bns.append((m, m.momentum))
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m, momentum in bns:
        m.momentum = momentum
    model.eval()


def _ours_from_ref(ref_model: nn.Module, tmp_path: Path) -> tuple[HRNetBackbone, OCRHead]:
    path = tmp_path / "ref_segmodel.pth"
    torch.save(ref_model.state_dict(), path)  # the reference's own checkpoint layout (`hrnet.*` + `ocrnet.*`)
    enc = HRNetBackbone()
    n = enc.load_pretrained(path)
    assert n == len(ref_model.hrnet.state_dict())
    head = OCRHead(enc.channels, 19)
    head.load_state_dict(ocr_authors_to_diga(ref_model.ocrnet.state_dict()), strict=True)
    return enc.eval(), head.eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def _compare(ref_model: nn.Module, enc: nn.Module, head: nn.Module, x: torch.Tensor) -> dict[str, float]:
    backbone_ref, aux_ref, logits_ref, feat_ref = ref_model(x)
    (backbone,) = enc(x)
    logits, feat, aux = head([backbone])
    diffs = {
        "backbone": _max_diff(backbone, backbone_ref),
        "aux": _max_diff(aux, aux_ref),
        "logits": _max_diff(logits, logits_ref),
        "feat": _max_diff(feat, feat_ref),
    }
    scale = {k: t.abs().max().item() for k, t in zip(diffs, (backbone_ref, aux_ref, logits_ref, feat_ref))}
    print({k: f"{v:.2e} (|ref|max {scale[k]:.2f})" for k, v in diffs.items()})
    assert all(s > 0.1 for s in scale.values()), scale  # not a trivially small comparison
    return diffs


def test_parameter_count(ref: types.ModuleType) -> None:
    ref_model = _build_ref(ref)
    enc = HRNetBackbone()
    head = OCRHead(enc.channels, 19)
    n_ref = sum(p.numel() for p in ref_model.parameters())
    n_ours = sum(p.numel() for p in enc.parameters()) + sum(p.numel() for p in head.parameters())
    n_ref_hr = sum(p.numel() for p in ref_model.hrnet.parameters())
    print(f"parameters: reference {n_ref} (HRNet {n_ref_hr}), ours {n_ours}")
    assert n_ours == n_ref
    assert sum(p.numel() for p in enc.parameters()) == n_ref_hr
    assert len(enc.body.state_dict()) == len(ref_model.hrnet.state_dict())


@pytest.mark.parametrize("size", [(64, 128), (68, 100)])  # the second is no multiple of 32
def test_eval_outputs_match(ref: types.ModuleType, tmp_path: Path, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 3, *size)
    ref_model = _build_ref(ref)
    _randomise(ref_model, x)
    enc, head = _ours_from_ref(ref_model, tmp_path)
    with torch.no_grad():
        diffs = _compare(ref_model, enc, head, x)
    assert max(diffs.values()) <= TOL, diffs


def test_train_mode_outputs_and_grads_match(ref: types.ModuleType, tmp_path: Path) -> None:
    """Train mode (BN batch statistics), dropout off: outputs, gradients and the BN running-stat updates agree."""
    torch.manual_seed(2)
    x = torch.randn(1, 3, 64, 128)
    ref_model = _build_ref(ref)
    _randomise(ref_model, x)
    enc, head = _ours_from_ref(ref_model, tmp_path)
    ref_model.ocrnet.augmented_rep[3].p = 0.0
    head.dropout.p = 0.0
    ref_model.train(), enc.train(), head.train()
    diffs = _compare(ref_model, enc, head, x)
    assert max(diffs.values()) <= TOL, diffs

    torch.manual_seed(3)
    outs_ref = ref_model(x)
    backbone = enc(x)[0]
    logits, feat, aux = head([backbone])
    weights = [torch.randn_like(t) for t in (logits, aux, feat)]
    sum((w * t).sum() for w, t in zip(weights, (outs_ref[2], outs_ref[1], outs_ref[3]))).backward()
    sum((w * t).sum() for w, t in zip(weights, (logits, aux, feat))).backward()

    ref_hr = hrnet_to_timm({k: p.grad for k, p in ref_model.hrnet.named_parameters()}, "<reference grads>")
    grad_diff_hr = max(_max_diff(p.grad, ref_hr[k]) for k, p in enc.body.named_parameters())
    ref_ocr = ocr_authors_to_diga({k: p.grad for k, p in ref_model.ocrnet.named_parameters()})
    grad_diff_ocr = max(_max_diff(p.grad, ref_ocr[k]) for k, p in head.named_parameters())
    grad_scale = max(p.grad.abs().max().item() for p in ref_model.parameters())
    print(f"max |grad| diff: HRNet {grad_diff_hr:.2e}, OCR {grad_diff_ocr:.2e} (|grad|max {grad_scale:.2f})")
    assert grad_diff_hr <= 1e-4 * max(grad_scale, 1.0) and grad_diff_ocr <= 1e-4 * max(grad_scale, 1.0)

    ref_stats = hrnet_to_timm(ref_model.hrnet.state_dict(), "<reference state dict>")
    stat_diff = max(_max_diff(v.float(), ref_stats[k].float()) for k, v in enc.body.state_dict().items())
    assert stat_diff <= TOL, stat_diff


def test_official_file_through_reference_loader(ref: types.ModuleType, tmp_path: Path) -> None:
    """An official-format ImageNet file (timm / HRNet-Image-Classification names, classification head included)
    written from our encoder: the reference loads it by *position* (`zip(model_dict, pretrained_dict)`), we by
    name through the explicit mapping; both must end up computing the same backbone map."""
    torch.manual_seed(4)
    x = torch.randn(1, 3, 64, 128)
    enc = HRNetBackbone()
    _randomise(enc, x, seed=5)
    sd = dict(enc.body.state_dict())
    sd["incre_modules.0.0.conv1.weight"] = torch.zeros(32, 48, 1, 1)  # classification-head keys come last
    sd["classifier.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "hrnetv2_w48_imagenet_pretrained.pth"
    torch.save(sd, path)

    ref_model = _build_ref(ref, pretrained=path).eval()
    ours = HRNetBackbone(pretrained=path).eval()
    with torch.no_grad():
        backbone_ref = ref_model.hrnet(x)
        diff = _max_diff(ours(x)[0], backbone_ref)
        diff_src = _max_diff(enc(x)[0], backbone_ref)
    print(f"official file: ours vs reference backbone max |diff| {diff:.2e} (source encoder {diff_src:.2e})")
    assert backbone_ref.abs().max() > 0.1
    assert diff <= TOL and diff_src <= TOL
