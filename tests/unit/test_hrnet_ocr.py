"""HRNet-W48 encoder and OCR head (DiGA's semi-supervised model): shapes, sizes, weight files, checkpointing.

CPU, random init, tiny inputs. The numerical comparison with the authors' code is tests/reference/test_ref_hrnet_ocr.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from diga.models.backbones import hrnet as hrnet_module
from diga.models.backbones.hrnet import HRNetBackbone, hrnet_to_timm, timm_to_authors
from diga.models.heads.ocr import OCR_DIGA_TO_AUTHORS, OCRHead, ocr_authors_to_diga
from diga.models.registry import create_backbone, create_head
from diga.models.weights import WeightFileError

# Measured with the authors' `SegModel` (model_hr.py, config_default.yaml, 19 classes) in
# tests/reference/test_ref_hrnet_ocr.py::test_parameter_count: 65 325 120 in `hrnet` + 5 047 558 in `ocrnet`.
REF_PARAMS_HRNET = 65_325_120
REF_PARAMS_TOTAL = 70_372_678


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """HRNet is hundreds of small convs: on a shared 2-core machine two OpenMP threads spin against other work
    (≈100× slower than one thread here), so these tests run single-threaded."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _calibrate(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random BN affine, running stats = statistics of `x`, eval mode: outputs depend on every tensor and stay O(1)."""
    torch.manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        nn.init.uniform_(m.weight, 0.5, 1.5)
        nn.init.normal_(m.bias, 0.0, 0.1)
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m in bns:
        m.momentum = 0.1
    return model.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def encoder(x: torch.Tensor) -> HRNetBackbone:
    return _calibrate(HRNetBackbone(), x)


@pytest.fixture(scope="module")
def blank() -> HRNetBackbone:
    return HRNetBackbone().eval()


def _wipe(model: nn.Module) -> None:
    with torch.no_grad():
        for t in model.state_dict().values():
            t.zero_()


def test_registry_and_shapes() -> None:
    enc = create_backbone("hrnet_w48").eval()
    assert isinstance(enc, HRNetBackbone)
    head = create_head("ocr", enc.channels, 19).eval()
    assert isinstance(head, OCRHead) and head.feat_dim == 512
    assert enc.channels == [720] and enc.strides == [4] and enc.branch_channels == [48, 96, 192, 384]
    assert enc.align_corners is True and HRNetBackbone.input_normalization == "caffe_rgb"
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        feats = enc(x)
        logits, feat, aux = head(feats)
    assert [tuple(f.shape) for f in feats] == [(1, c, 64 // s, 128 // s) for c, s in zip(enc.channels, enc.strides)]
    assert logits.shape == aux.shape == (1, 19, 16, 32)
    assert feat.shape == (1, head.feat_dim, 16, 32)


def test_parameter_count_equals_reference() -> None:
    enc = HRNetBackbone()
    head = OCRHead(enc.channels, 19)
    n_enc = sum(p.numel() for p in enc.parameters())
    assert n_enc == REF_PARAMS_HRNET
    assert n_enc + sum(p.numel() for p in head.parameters()) == REF_PARAMS_TOTAL


def test_sizes_not_multiple_of_32(encoder: HRNetBackbone) -> None:
    with torch.no_grad():
        (out,) = encoder(torch.randn(1, 3, 68, 100))  # branches 17×25, 9×13, 5×7, 3×4
    assert out.shape == (1, 720, 17, 25) and torch.isfinite(out).all()


def test_nearest_fusion_equals_timm(encoder: HRNetBackbone, x: torch.Tensor) -> None:
    """With `fuse_upsample="nearest"` our fusion is timm's own forward (same weights): the re-implemented
    module loop and transitions are right, only the up-sampling differs in the default (reference) mode."""
    body = timm.create_model("hrnet_w48", features_only=True, feature_location="", out_indices=(1, 2, 3, 4))
    body.load_state_dict(encoder.body.state_dict())
    body.eval()
    nearest = copy.deepcopy(encoder)
    nearest.fuse_upsample = "nearest"
    with torch.no_grad():
        branches = body(x)
        (ours,) = nearest(x)
        (bilinear,) = encoder(x)
    size = branches[0].shape[-2:]
    expected = torch.cat(
        [branches[0], *(F.interpolate(b, size=size, mode="bilinear", align_corners=True) for b in branches[1:])], 1
    )
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(bilinear, expected, atol=1e-3)  # the reference mode really is different


def _formats(encoder: HRNetBackbone) -> dict[str, dict[str, torch.Tensor]]:
    timm_sd = dict(encoder.body.state_dict())
    official = {
        **timm_sd,  # HRNet-Image-Classification: same names + a classification head
        "incre_modules.0.0.conv1.weight": torch.zeros(32, 48, 1, 1),
        "downsamp_modules.0.0.weight": torch.zeros(256, 128, 3, 3),
        "final_layer.0.weight": torch.zeros(2048, 1024, 1, 1),
        "classifier.weight": torch.zeros(1000, 2048),
        "classifier.bias": torch.zeros(1000),
    }
    authors = timm_to_authors(timm_sd)
    segmodel = {
        **{f"hrnet.{k}": v for k, v in authors.items()},
        "ocrnet.segmentation_classes.0.weight": torch.zeros(19, 512, 1, 1),
    }
    no_counters = {k: v for k, v in authors.items() if not k.endswith("num_batches_tracked")}  # pre-1.0 files
    return {"timm": timm_sd, "official": official, "authors": authors, "segmodel": segmodel, "old": no_counters}


@pytest.mark.parametrize("fmt", ["timm", "official", "authors", "segmodel", "old"])
def test_weight_round_trip(
    encoder: HRNetBackbone, blank: HRNetBackbone, x: torch.Tensor, tmp_path: Path, fmt: str
) -> None:
    sd = _formats(encoder)[fmt]
    if fmt != "timm":
        assert "layer1.0.conv1.weight" not in sd or fmt == "official"
    path = tmp_path / f"{fmt}.pth"
    torch.save(sd, path)
    _wipe(blank)
    n = blank.load_pretrained(path)
    assert n == len(encoder.body.state_dict()) - (fmt == "old") * sum(
        k.endswith("num_batches_tracked") for k in encoder.body.state_dict()
    )
    loaded = blank.body.state_dict()
    for k, v in encoder.body.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded[k], v), k
    with torch.no_grad():
        assert torch.equal(blank(x)[0], encoder(x)[0])


def test_authors_names_mapping() -> None:
    sd = {"stage1.0.conv1.weight": torch.zeros(1), "transition_stage_3_4.3.0.0.weight": torch.zeros(1)}
    assert list(hrnet_to_timm(sd, "f")) == ["layer1.0.conv1.weight", "transition3.3.0.0.weight"]
    assert timm_to_authors(hrnet_to_timm(sd, "f")).keys() == sd.keys()


def _bad_files(encoder: HRNetBackbone, tmp_path: Path) -> dict[str, Path]:
    good = dict(encoder.body.state_dict())
    cases: dict[str, dict[str, torch.Tensor] | None] = {
        "missing": None,
        "foreign": {"fc.weight": torch.zeros(10, 10), "layer4.0.conv1.weight": torch.zeros(1)},
        "partial": {k: v for k, v in good.items() if not k.startswith("stage4.")},
        "shape": {**good, "conv1.weight": torch.zeros(64, 4, 3, 3)},
        "extra": {**good, "decode_head.conv_seg.weight": torch.zeros(19, 512, 1, 1)},
        "mixed": {**good, **timm_to_authors({k: v for k, v in good.items() if k.startswith("layer1.")})},
        "stray_segmodel": {**{f"hrnet.{k}": v for k, v in good.items()}, "teacher.x": torch.zeros(1)},
    }
    paths = {}
    for name, sd in cases.items():
        paths[name] = tmp_path / f"{name}.pth"
        if sd is not None:
            torch.save(sd, paths[name])
    return paths


def test_bad_files_raise_naming_the_file(blank: HRNetBackbone, encoder: HRNetBackbone, tmp_path: Path) -> None:
    for name, path in _bad_files(encoder, tmp_path).items():
        with pytest.raises(WeightFileError) as err:
            blank.load_pretrained(path)
        assert str(path) in str(err.value), (name, str(err.value))


def test_grad_checkpointing_same_outputs_grads_and_bn_stats(
    encoder: HRNetBackbone, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = hrnet_module.checkpoint
    monkeypatch.setattr(hrnet_module, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    plain, ckpt = copy.deepcopy(encoder).train(), copy.deepcopy(encoder).train()
    ckpt.set_grad_checkpointing(True)
    w = torch.randn(1, 720, 16, 16, generator=torch.Generator().manual_seed(2))
    outs = []
    for m in (plain, ckpt):
        xi = x.clone().requires_grad_(True)
        (y,) = m(xi)
        (y * w).sum().backward()
        outs.append((y.detach(), xi.grad))
    assert len(calls) == 1 + 1 + 4 + 3  # layer1 + every multi-resolution module (stages 2/3/4: 1/4/3)
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=0, atol=0)
    for (k, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=k)
    for (k, a), b in zip(plain.state_dict().items(), ckpt.state_dict().values()):  # BN stats updated once only
        assert torch.equal(a, b), k
    assert not torch.equal(plain.body.bn1.running_mean, encoder.body.bn1.running_mean)  # stats did update


def test_ocr_feat_after_dropout_option() -> None:
    torch.manual_seed(0)
    heads = [OCRHead([16], 5, embed_dim=32, key_channels=8, dropout=0.5, feat_after_dropout=f) for f in (False, True)]
    heads[1].load_state_dict(heads[0].state_dict())
    x = [torch.randn(2, 16, 8, 8)]
    outs = []
    for h in heads:
        h.train()
        torch.manual_seed(1)
        outs.append(h(x))
    (logits0, feat0, aux0), (logits1, feat1, aux1) = outs
    assert torch.equal(logits0, logits1) and torch.equal(aux0, aux1)
    assert torch.equal(heads[1].classifier(feat1), logits1)  # REF: `feat` is what the classifier sees
    assert not torch.equal(feat0, feat1)
    for h in heads:
        h.eval()
    with torch.no_grad():
        assert torch.equal(heads[0](x)[1], heads[1](x)[1])  # identical in eval mode


def test_ocr_authors_mapping_is_complete_and_strict() -> None:
    head = OCRHead([16], 5, embed_dim=32, key_channels=8)
    own = head.state_dict()
    table = sorted(OCR_DIGA_TO_AUTHORS.items(), key=lambda t: -len(t[0]))
    as_ref = {}
    for k, v in own.items():
        diga = next(d for d, _ in table if k.startswith(d + "."))
        as_ref[OCR_DIGA_TO_AUTHORS[diga] + k[len(diga) :]] = v
    assert ocr_authors_to_diga(as_ref).keys() == own.keys()
    assert ocr_authors_to_diga({f"ocrnet.{k}": v for k, v in as_ref.items()}).keys() == own.keys()
    with pytest.raises(KeyError):
        ocr_authors_to_diga({**as_ref, "cls_head.weight": torch.zeros(1)})
