"""diga's DAFormer head against the authors' `DAFormerHead` (GTA5 folder of github fy-vision/DiGA).

The authors' head is built from mmcv blocks; a small stand-in for `mmcv.cnn` with mmcv's documented semantics
(ConvModule = conv (bias only without norm) → norm → act; DepthwiseSeparableConvModule = depthwise ConvModule →
pointwise ConvModule, both with norm and act) lets their file run unmodified. Same weights, same input → same logits.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from diga.models.heads import DAFormerHead
from diga.models.weights import daformer_head_from_mmseg
from tests.reference.util import load_module, reference_checkout

pytestmark = pytest.mark.reference


class _ConvModule(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, dilation=1, groups=1, norm_cfg=None,
                 act_cfg={"type": "ReLU"}, conv_cfg=None, bias="auto", **_):  # noqa: B006  # fmt: skip
        super().__init__()
        with_norm = norm_cfg is not None
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, groups,
                              bias=not with_norm if bias == "auto" else bias)  # fmt: skip
        self.bn = nn.BatchNorm2d(cout) if with_norm else None
        self.act = nn.ReLU(inplace=True) if act_cfg is not None else None

    def forward(self, x):
        x = self.conv(x)
        x = self.bn(x) if self.bn is not None else x
        return self.act(x) if self.act is not None else x


class _SepConvModule(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride=1, padding=0, dilation=1, norm_cfg=None,
                 act_cfg={"type": "ReLU"}, **_):  # noqa: B006  # fmt: skip
        super().__init__()
        self.depthwise_conv = _ConvModule(cin, cin, kernel_size, stride, padding, dilation, groups=cin,
                                          norm_cfg=norm_cfg, act_cfg=act_cfg)  # fmt: skip
        self.pointwise_conv = _ConvModule(cin, cout, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


def _mmcv_stub() -> dict[str, types.ModuleType]:
    mmcv, cnn = types.ModuleType("mmcv"), types.ModuleType("mmcv.cnn")
    cnn.ConvModule, cnn.DepthwiseSeparableConvModule, cnn.normal_init = (
        _ConvModule,
        _SepConvModule,
        lambda *a, **k: None,
    )
    mmcv.cnn = cnn
    return {"mmcv": mmcv, "mmcv.cnn": cnn}


def test_daformer_head_equals_the_authors() -> None:
    path = reference_checkout("DiGA") / "domain_adaptation/GTA5/model/networks/segformer_head.py"
    ref_mod = load_module(path, "diga_ref_segformer_head", stubs=_mmcv_stub())
    channels = [32, 64, 160, 256]
    ref = ref_mod.DAFormerHead(in_channels=channels, channels=256, feature_strides=[4, 8, 16, 32], num_classes=19,
                               in_index=[0, 1, 2, 3], act_cfg={"type": "ReLU"}, dropout_ratio=0.1,
                               norm_cfg={"type": "BN", "requires_grad": True}).eval()  # fmt: skip
    ours = DAFormerHead(channels, 19).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    sd = {f"decode_head.{k}": v for k, v in ref.state_dict().items()}
    mapped = daformer_head_from_mmseg(sd)
    assert set(mapped) == set(ours.state_dict()), set(mapped) ^ set(ours.state_dict())
    ours.load_state_dict(mapped)
    torch.manual_seed(0)
    feats = [torch.randn(2, c, 32 // s, 64 // s) for c, s in zip(channels, (1, 2, 4, 8))]
    with torch.no_grad():
        ref_logits, _ = ref(feats)
        our_logits, _ = ours(feats)
    torch.testing.assert_close(our_logits, ref_logits, atol=1e-5, rtol=0)
