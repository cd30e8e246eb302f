"""HRDA's pieces on hand-computed values (`diga.models.hrda`); the comparison with the authors' code is in
tests/reference/test_ref_hrda.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diga.models import build_segmentor
from diga.models.hrda import HRDASegmentor, fuse_scales, multi_resolution_loss
from diga.utils.windows import CropBox, random_crop_box, sliding_boxes, stitch_windows


def test_a_crop_box_scales_its_corners_down() -> None:
    assert CropBox(32, 96, 16, 80).scaled(8) == CropBox(4, 12, 2, 10)
    assert CropBox(0, 8, 0, 8).of(torch.arange(256.0).view(16, 16)).shape == (8, 8)


def test_random_crop_boxes_sit_on_the_grid_inside_the_image() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = [random_crop_box(100, 200, (48, 64), 8, g) for _ in range(500)]
    assert all(b.y1 % 8 == 0 and b.x1 % 8 == 0 and b.y2 <= 100 and b.x2 <= 200 for b in boxes)
    assert all(b.y2 - b.y1 == 48 and b.x2 - b.x1 == 64 for b in boxes)
    # margins 52 and 136: (margin + 1) // 8 = 6 and 17 positions, so the last corners are 40 and 128 (as HRDA)
    assert max(b.y1 for b in boxes) == 40 and max(b.x1 for b in boxes) == 128
    assert random_crop_box(48, 64, (48, 64), 8) == CropBox(0, 48, 0, 64)


def test_sliding_windows_cover_the_image_and_end_at_its_border() -> None:
    boxes = sliding_boxes(96, 160, (64, 64), (32, 32))
    assert len(boxes) == 2 * 4  # rows: (96 − 64 + 31) // 32 + 1; columns: (160 − 64 + 31) // 32 + 1
    assert boxes[0] == CropBox(0, 64, 0, 64) and boxes[-1] == CropBox(32, 96, 96, 160)


def test_stitching_averages_where_windows_overlap() -> None:
    boxes = [CropBox(0, 2, 0, 2), CropBox(0, 2, 1, 3)]
    windows = torch.cat([torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 3.0)])
    out = stitch_windows(zip(boxes, windows.split(1)), (2, 3))
    assert out[0, 0].tolist() == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match="do not cover"):
        stitch_windows([(CropBox(0, 2, 1, 3), windows[:1])], (2, 3))


def test_fusion_is_the_context_where_the_attention_is_zero_and_the_detail_where_it_is_one() -> None:
    context, detail = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 8, 8)
    up = F.interpolate(context, scale_factor=2.0, mode="bilinear", align_corners=False)
    torch.testing.assert_close(fuse_scales(context, torch.zeros(1, 3, 4, 4), detail, 2.0, 4), up)
    torch.testing.assert_close(fuse_scales(context, torch.ones(1, 3, 4, 4), detail, 2.0, 4), detail)
    # a detail window of input pixels [0, 16) × [0, 16): logits [0, 4) × [0, 4), attention [0, 2) × [0, 2)
    fused = fuse_scales(context, torch.ones(1, 3, 4, 4), detail[..., :4, :4], 2.0, 4, CropBox(0, 16, 0, 16))
    torch.testing.assert_close(fused[..., :2, :2], detail[..., :2, :2])  # inside, away from the window's edge
    torch.testing.assert_close(fused[..., 5:, 5:], up[..., 5:, 5:])  # outside: the context alone


def test_the_loss_weighs_the_fused_and_the_detail_prediction() -> None:
    def mean_loss(logits, label, weight=None):
        return logits.mean() * (1 if weight is None else weight.mean())

    fused, detail = torch.full((1, 2, 8, 8), 2.0), torch.full((1, 2, 4, 4), 10.0)
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    total = multi_resolution_loss(mean_loss, fused, detail, label, CropBox(0, 4, 0, 4), 0.1)
    assert float(total) == pytest.approx(0.9 * 2 + 0.1 * 10)
    assert float(multi_resolution_loss(mean_loss, fused, detail, label, CropBox(0, 4, 0, 4), 0.0)) == 2.0


def test_the_factory_builds_hrda_and_its_passes_have_the_expected_shapes() -> None:
    torch.manual_seed(0)
    model = build_segmentor({"name": "mit_b0"}, {"name": "daformer", "embed_dim": 32}, num_classes=4,
                            hrda={"hr_crop_size": [32, 32], "attention": {"embed_dim": 16}}).eval()  # fmt: skip
    assert isinstance(model, HRDASegmentor)
    assert model.attention.fusion == "conv" and model.attention.conv_seg.out_channels == 4
    assert set(map(id, model.param_groups()["head"])) >= set(map(id, model.attention.parameters()))
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        train = model.forward_train(x, CropBox(16, 48, 32, 64))
    assert out.logits.shape == (2, 4, 16, 24)  # the full-resolution image's output stride
    assert train.logits.shape == (2, 4, 16, 24) and train.detail.shape == (2, 4, 8, 8)
    assert train.features.logits.shape == (2, 4, 8, 12)  # the half-resolution pass
    # away from the detail window (rows 4–12, columns 8–16 at the output stride; bilinear up-sampling blends one pixel
    # beyond its edge) the fused prediction is the context's alone, inside it is not
    context_only = torch.nn.functional.interpolate(train.features.logits, scale_factor=2, mode="bilinear")
    outside, inside = torch.ones(16, 24, dtype=torch.bool), torch.zeros(16, 24, dtype=torch.bool)
    outside[3:13, 7:17], inside[5:11, 9:15] = False, True
    assert torch.allclose(train.logits[..., outside], context_only[..., outside], atol=1e-6)
    assert not torch.allclose(train.logits[..., inside], context_only[..., inside], atol=1e-3)


def test_an_image_off_the_scale_grid_is_padded_and_its_logits_cropped_back() -> None:
    """HRDA's two scales line up on sides that are multiples of 8 (context logits × 2 on the detail grid): an image
    smaller than the sliding window with an odd side (1080×1920 at 1/8 is 135×240) is padded with the mean colour,
    and the logits cover the image: ⌈135/4⌉ rows. On the grid, nothing is padded."""
    from diga.evaluation.inference import InferenceConfig, predict_logits

    torch.manual_seed(0)
    model = build_segmentor({"name": "mit_b0"}, {"name": "daformer", "embed_dim": 32}, num_classes=4,
                            hrda={"hr_crop_size": [64, 64], "attention": {"embed_dim": 16}}).eval()  # fmt: skip
    assert model.size_multiple == 8
    x = torch.rand(1, 3, 135, 240)
    with torch.no_grad():
        out = model(x)
        assert out.logits.shape == (1, 4, 34, 60) and out.feat.shape[-2:] == (34, 60)
        padded = model(torch.nn.functional.pad(x, (0, 0, 0, 1)))  # 136 rows: on the grid
        assert padded.logits.shape == (1, 4, 34, 60)
        window = InferenceConfig(mode="slide", crop_size=(128, 128), stride=(64, 64), batched=True, align_corners=False)
        assert predict_logits(model, x, window, 4).shape == (1, 4, 135, 240)  # windows clipped to 128×128 and one of 7


def test_pseudo_label_margins_follow_the_crop(tmp_path) -> None:
    """HRDA's margins are set on the native image and cropped with it: a crop away from the border keeps all."""
    import numpy as np

    from diga.data.datasets.base import margins_or_none, valid_pseudo_mask

    mask = valid_pseudo_mask((10, 12), (2, 3, 1, 0))
    assert mask[:2].sum() == 0 and mask[-3:].sum() == 0 and mask[:, 0].sum() == 0 and mask[2:7, 1:].all()
    assert margins_or_none([0, 0, 0, 0]) is None and margins_or_none(None) is None
    with pytest.raises(ValueError, match="top, bottom, left, right"):
        margins_or_none([1, 2])
    from diga.data.transforms import train_transform

    tf = train_transform((4, 4), random_scale=None, hflip=0)
    out = tf(image=np.zeros((10, 12, 3), np.uint8), valid=mask)
    assert out["valid"].shape == (4, 4)
