"""The authors' released DAFormer / HRDA / MIC checkpoints load whole: random weights of the authors' own networks,
saved under the authors' mmseg key names, give the same logits in diga as in the authors' model.

The authors' networks are their files, unmodified: the MiT encoder and DAFormer head of github fy-vision/DiGA (the
DAFormer code DiGA ships) on the mmcv stand-in of test_ref_daformer_head, and lhoyer/HRDA's HRDAHead and
HRDAEncoderDecoder on the mmseg stand-ins of test_ref_hrda. The scale-attention head is their DAFormer head with
their `build_layer(type="conv")` fusion, as HRDAHead builds it.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diga.models import build_segmentor
from diga.models.released import load_released
from tests.reference.test_ref_daformer_head import _ConvModule, _mmcv_stub
from tests.reference.test_ref_hrda import _load_authors, _LogitsOnly
from tests.reference.util import load_module, reference_checkout

pytestmark = pytest.mark.reference
CLASSES = 19
NETWORKS = "domain_adaptation/GTA5/model/networks"


def _authors_networks() -> tuple[nn.Module, types.ModuleType]:
    stubs = _mmcv_stub()
    runner, utils = types.ModuleType("mmcv.runner"), types.ModuleType("mmcv.utils")
    runner.load_checkpoint, utils.get_logger = (lambda *a, **k: None), (lambda *a, **k: None)
    stubs["mmcv"].runner, stubs["mmcv"].utils = runner, utils
    stubs.update({"mmcv.runner": runner, "mmcv.utils": utils})
    root = reference_checkout("DiGA") / NETWORKS
    mit = load_module(root / "MixTransfomer.py", "diga_ref_mix_transformer", stubs=stubs)
    heads = load_module(root / "segformer_head.py", "diga_ref_segformer_head_released", stubs=stubs)
    torch.manual_seed(0)
    return mit.mit_b0().eval(), heads


def _daformer_head(heads: types.ModuleType, fusion: str = "aspp") -> nn.Module:
    head = heads.DAFormerHead(in_channels=[32, 64, 160, 256], channels=256, feature_strides=[4, 8, 16, 32],
                              num_classes=CLASSES, in_index=[0, 1, 2, 3], act_cfg={"type": "ReLU"}, dropout_ratio=0.1,
                              norm_cfg={"type": "BN", "requires_grad": True})  # fmt: skip
    if fusion == "conv":  # HRDA's attention head: DAFormer's head with the 1×1 conv fusion
        heads.ConvModule = lambda in_channels, out_channels, **kw: _ConvModule(in_channels, out_channels, **kw)
        head.fuse_layer = heads.build_layer(4 * 256, 256, type="conv", kernel_size=1, act_cfg={"type": "ReLU"},
                                            norm_cfg={"type": "BN", "requires_grad": True})  # fmt: skip
    for m in head.modules():  # non-trivial BatchNorm statistics, so a mis-mapped buffer shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return head.eval()


def _save(path: Path, parts: dict[str, nn.Module]) -> Path:
    """A DACS training checkpoint: the student under `model.`, a different teacher under `ema_model.`."""
    sd = {f"model.{p}.{k}": v for p, m in parts.items() for k, v in m.state_dict().items()}
    sd.update({k.replace("model.", "ema_model.", 1): torch.zeros_like(v) for k, v in sd.items()})
    torch.save({"meta": {}, "state_dict": sd}, path)
    return path


def test_a_released_daformer_checkpoint_gives_the_authors_logits(tmp_path: Path) -> None:
    backbone, heads = _authors_networks()
    head = _daformer_head(heads)
    path = _save(tmp_path / "daformer.pth", {"backbone": backbone, "decode_head": head})
    ours = build_segmentor({"name": "mit_b0"}, {"name": "daformer", "embed_dim": 256}, CLASSES).eval()
    assert load_released(ours, path) == len(ours.state_dict())
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        theirs = head(backbone(ours.normalize(x)))[0]
        mine = ours(x).logits
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


def test_a_released_hrda_checkpoint_gives_the_authors_logits(tmp_path: Path) -> None:
    backbone, heads = _authors_networks()
    head, attention = _daformer_head(heads), _daformer_head(heads, "conv")
    encoder_decoder, hrda_head = _load_authors([_LogitsOnly(head), _LogitsOnly(attention)])
    decoder = {"embed_dims": 256, "fusion_cfg": {"type": "aspp", "norm_cfg": {"type": "BN"}}}
    hrda = hrda_head.HRDAHead(single_scale_head="DAFormerHead", hr_loss_weight=0.1, scales=[0.5, 1],
                              enable_hr_crop=True, in_channels=[32, 64, 160, 256], channels=256,
                              num_classes=CLASSES, decoder_params=decoder, align_corners=False).eval()  # fmt: skip
    path = _save(tmp_path / "hrda.pth", {"backbone": backbone, "decode_head.head": head,
                                         "decode_head.scale_attention": attention})  # fmt: skip
    ours = build_segmentor({"name": "mit_b0"}, {"name": "daformer", "embed_dim": 256}, CLASSES,
                           hrda={"hr_crop_size": [64, 64], "attention": {"embed_dim": 256}}).eval()  # fmt: skip
    assert load_released(ours, path) == len(ours.state_dict())
    # the authors' encode_decode (HRDAEncoderDecoder) on their networks: context at 0.5, batched detail windows
    ed = encoder_decoder.HRDAEncoderDecoder
    stub = types.SimpleNamespace(scales=[0.5, 1], blur_hr_crop=False, align_corners=False, hr_slide_inference=True,
                                 crop_size=[64, 64], hr_slide_overlapping=True, extract_unscaled_feat=backbone,
                                 decode_head=hrda, test_cfg={})  # fmt: skip
    stub.resize = types.MethodType(ed.resize, stub)
    stub.extract_slide_feat = types.MethodType(ed.extract_slide_feat, stub)
    stub._decode_head_forward_test = lambda feats, metas: hrda.forward_test(feats, metas, {})
    hrda.debug = False
    x = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        theirs = ed.encode_decode(stub, ours.normalize(x), None)
        mine = F.interpolate(ours(x).logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


def test_the_teacher_and_mismatched_models_are_chosen_or_refused_by_name(tmp_path: Path) -> None:
    from diga.models.weights import WeightFileError

    backbone, heads = _authors_networks()
    path = _save(tmp_path / "daformer.pth", {"backbone": backbone, "decode_head": _daformer_head(heads)})
    ours = build_segmentor({"name": "mit_b0"}, {"name": "daformer", "embed_dim": 256}, CLASSES).eval()
    load_released(ours, path, which="teacher")  # the EMA teacher of this file is all zeros
    assert all(float(v.abs().sum()) == 0 for k, v in ours.state_dict().items() if "num_batches" not in k)
    hrda = build_segmentor({"name": "mit_b0"}, {"name": "daformer", "embed_dim": 256}, CLASSES,
                           hrda={"hr_crop_size": [64, 64]})  # fmt: skip
    with pytest.raises(WeightFileError, match="scale_attention"):
        load_released(hrda, path)


def test_the_converted_file_evaluates_like_the_authors_model(tmp_path: Path) -> None:
    """`python -m diga.convert` → a diga model file that `load_segmentor` (evaluate, predict, pseudo-labels) rebuilds
    with the same logits."""
    from diga.convert import main
    from diga.models.loading import load_segmentor

    backbone, heads = _authors_networks()
    head = _daformer_head(heads)
    path = _save(tmp_path / "daformer.pth", {"backbone": backbone, "decode_head": head})
    out = tmp_path / "final_model.pt"
    assert main(["experiment=gta2cs_mic", "model=segformer_b0", "model.head.embed_dim=256", f"released={path}",
                 f"out={out}"]) == 0  # fmt: skip
    model, label_set = load_segmentor(out)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, head(backbone(model.normalize(x)))[0], atol=1e-4, rtol=1e-4)
    assert label_set == "cityscapes19"
