"""diga's HRDA pieces against the authors' `HRDAHead` and `HRDAEncoderDecoder` (github lhoyer/HRDA).

The authors' two files run unmodified on small stand-ins for what they import (mmseg's registry and builder, the
`resize` wrapper, a `BaseDecodeHead` with mmseg's loss: bilinear resize to the label, then the pixel-weighted CE
averaged over every pixel). `builder.build_head` hands their HRDAHead diga's own decode and attention heads, so the
comparison isolates what HRDA adds: window placement, stitching, scale attention, fusion and the detail loss.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diga.losses.segmentation import cross_entropy
from diga.models.heads import DAFormerHead
from diga.models.hrda import fuse_scales, multi_resolution_loss
from diga.utils.windows import CropBox, sliding_boxes, stitch_windows
from tests.reference.util import reference_checkout

pytestmark = pytest.mark.reference
CLASSES, CHANNELS = 5, [8, 16, 24, 32]


def _resize(input, size=None, scale_factor=None, mode="nearest", align_corners=None, warning=True):
    return F.interpolate(input, size, scale_factor, mode, align_corners)


class _BaseDecodeHead(nn.Module):
    def __init__(self, in_channels, channels, num_classes, dropout_ratio=0.1, align_corners=False, **_):
        super().__init__()
        self.num_classes, self.align_corners, self.ignore_index, self.sampler = num_classes, align_corners, 255, None
        self.conv_seg, self.dropout = nn.Conv2d(channels, num_classes, 1), nn.Dropout2d(dropout_ratio)
        self.debug, self.debug_output = False, {}

    def losses(self, seg_logit, seg_label, seg_weight=None):  # mmseg's BaseDecodeHead.losses with its CE
        seg_logit = _resize(seg_logit, size=seg_label.shape[2:], mode="bilinear", align_corners=self.align_corners)
        per_pixel = F.cross_entropy(seg_logit, seg_label.squeeze(1), ignore_index=255, reduction="none")
        if seg_weight is not None:
            per_pixel = per_pixel * seg_weight
        return {"loss_seg": per_pixel.mean()}


class _LogitsOnly(nn.Module):
    """diga's heads return (logits, feature); mmseg's return logits."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.inner = head

    def forward(self, feats):
        return self.inner(feats)[0]


def _load_authors(heads: list[nn.Module]) -> tuple[types.ModuleType, types.ModuleType]:
    root = reference_checkout("HRDA") / "mmseg" / "models"
    names = ["mmseg", "mmseg.core", "mmseg.ops", "mmseg.models", "mmseg.models.builder", "mmseg.models.segmentors",
             "mmseg.models.segmentors.encoder_decoder", "mmseg.models.decode_heads",
             "mmseg.models.decode_heads.decode_head"]  # fmt: skip
    stubs = {n: types.ModuleType(n) for n in names}
    for n in [*names[:4], "mmseg.models.segmentors", "mmseg.models.decode_heads"]:
        stubs[n].__path__ = []  # packages, so that the files' relative imports resolve
    stubs["mmseg.core"].add_prefix = lambda d, p: {f"{p}.{k}": v for k, v in d.items()}
    stubs["mmseg.ops"].resize = _resize
    registry = types.SimpleNamespace(register_module=lambda: lambda cls: cls)
    builder = stubs["mmseg.models.builder"]
    builder.HEADS, builder.SEGMENTORS = registry, registry
    pending = list(heads)
    builder.build_head = lambda cfg: pending.pop(0)
    stubs["mmseg.models.segmentors.encoder_decoder"].EncoderDecoder = nn.Module
    stubs["mmseg.models.decode_heads.decode_head"].BaseDecodeHead = _BaseDecodeHead
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        import importlib.util

        loaded = []
        files = [("mmseg.models.segmentors.hrda_encoder_decoder", root / "segmentors/hrda_encoder_decoder.py"),
                 ("mmseg.models.decode_heads.hrda_head", root / "decode_heads/hrda_head.py")]  # fmt: skip
        for name, path in files:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            loaded.append(module)
        return loaded[0], loaded[1]
    finally:
        for k in [*stubs, "mmseg.models.segmentors.hrda_encoder_decoder", "mmseg.models.decode_heads.hrda_head"]:
            if saved.get(k) is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = saved[k]


def _authors_head(detail_weight: float = 0.1):
    torch.manual_seed(0)
    head = DAFormerHead(CHANNELS, CLASSES, embed_dim=16).eval()
    attention = DAFormerHead(CHANNELS, CLASSES, embed_dim=16, fusion="conv").eval()
    encoder_decoder, hrda_head = _load_authors([_LogitsOnly(head), _LogitsOnly(attention)])
    decoder = {"embed_dims": 16, "fusion_cfg": {"type": "aspp", "norm_cfg": {"type": "BN"}}}
    ref = hrda_head.HRDAHead(single_scale_head="DAFormerHead", hr_loss_weight=detail_weight, scales=[0.5, 1],
                             enable_hr_crop=True, in_channels=CHANNELS, channels=16, num_classes=CLASSES,
                             decoder_params=decoder, align_corners=False).eval()  # fmt: skip
    return ref, head, attention, encoder_decoder


def _features(batch: int, h: int, w: int) -> list[torch.Tensor]:
    """Encoder-like features of an h×w input: strides 4, 8, 16, 32."""
    return [torch.randn(batch, c, h // s, w // s) for c, s in zip(CHANNELS, (4, 8, 16, 32))]


def test_training_fusion_and_loss_equal_the_authors() -> None:
    ref, head, attention, _ = _authors_head()
    torch.manual_seed(1)
    context, detail = _features(2, 64, 64), _features(2, 64, 64)  # a 128×128 crop at 0.5; its 64×64 detail window
    box = CropBox(32, 96, 16, 80)  # input pixels, multiples of 8
    ref.set_hr_crop_box((box.y1, box.y2, box.x1, box.x2))
    label = torch.randint(0, CLASSES, (2, 1, 128, 128))
    label[:, :, :10] = 255
    weight = torch.rand(2, 128, 128)
    with torch.no_grad():
        ref_fused, ref_context, ref_detail = ref(([*context], [*detail]))
        ref_losses = ref.losses((ref_fused, ref_context, ref_detail), label, weight)
        att = torch.sigmoid(attention(context)[0])
        ours = fuse_scales(head(context)[0], att, head(detail)[0], 2.0, 4, box)
    torch.testing.assert_close(ours, ref_fused, atol=1e-6, rtol=0)

    def loss(logits, target, weight=None):
        up = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        return cross_entropy(up, target, "all_pixels", weight)

    ours_loss = multi_resolution_loss(loss, ours, head(detail)[0], label[:, 0], box, 0.1, weight)
    torch.testing.assert_close(ours_loss, ref_losses["loss_seg"] + ref_losses["hr.loss_seg"], atol=1e-6, rtol=0)


def test_inference_stitching_and_fusion_equal_the_authors() -> None:
    ref, head, attention, encoder_decoder = _authors_head()
    torch.manual_seed(2)
    image = torch.randn(2, 3, 96, 160)
    stub = types.SimpleNamespace(crop_size=[64, 64], hr_slide_overlapping=True,
                                 extract_unscaled_feat=lambda x: _features(x.shape[0], *x.shape[-2:]))  # fmt: skip
    torch.manual_seed(3)
    slid = encoder_decoder.HRDAEncoderDecoder.extract_slide_feat(stub, image)
    boxes = sliding_boxes(96, 160, (64, 64), (32, 32))
    assert [[b.y1, b.y2, b.x1, b.x2] for b in boxes] == slid["boxes"]
    context = _features(2, 48, 80)
    with torch.no_grad():
        ref_fused = ref(([*context], {"features": slid["features"], "boxes": [list(b) for b in slid["boxes"]]}))[0]
        scaled = [b.scaled(4) for b in boxes]
        detail = stitch_windows(zip(scaled, head(slid["features"])[0].split(2)), (24, 40))
        ours = fuse_scales(head(context)[0], torch.sigmoid(attention(context)[0]), detail, 2.0, 4)
    torch.testing.assert_close(ours, ref_fused, atol=1e-6, rtol=0)


def test_crop_boxes_take_the_authors_positions() -> None:
    _, _, _, encoder_decoder = _authors_head()
    import numpy as np

    from diga.utils.windows import random_crop_box

    np.random.seed(0)
    theirs = {encoder_decoder.get_crop_bbox(1024, 1024, [512, 512], 8) for _ in range(40000)}
    g = torch.Generator().manual_seed(0)
    ours = {tuple(vars(random_crop_box(1024, 1024, (512, 512), 8, g)).values()) for _ in range(40000)}
    corners = range(0, 512, 8)  # (margin + 1) // 8 = 64 positions per axis: 504 is the last
    assert theirs == ours == {(y, y + 512, x, x + 512) for y in corners for x in corners}


def test_the_reference_checkout_is_the_hrda_repository() -> None:
    root: Path = reference_checkout("HRDA")
    assert (root / "configs" / "hrda" / "gtaHR2csHR_hrda.py").is_file()
