"""Model output shapes and weight loading from local files (MiT, mmseg/DAFormer, ResNet, diga's own)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch

from diga.models import build_segmentor
from diga.models.backbones import MiTBackbone, ResNetBackbone
from diga.models.segmentor import Normalize
from diga.models.weights import WeightFileError


@pytest.mark.parametrize(
    ("backbone", "head", "stride", "feat_dim"),
    [("mit_b0", "segformer", 4, 256), ("mit_b0", "daformer", 4, 256), ("resnet101", "deeplabv2", 8, 256)],
)
def test_output_shapes(backbone: str, head: str, stride: int, feat_dim: int) -> None:
    model = build_segmentor(backbone, head, num_classes=19).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96))
    assert out.logits.shape == (2, 19, 64 // stride, 96 // stride)
    assert out.feat.shape == (2, feat_dim, 64 // stride, 96 // stride)
    assert model.feat_dim == feat_dim and model.output_stride == stride


def test_segformer_b2_to_b5_use_768_wide_head() -> None:
    assert build_segmentor("mit_b2", "segformer", num_classes=19).feat_dim == 768


def _timm_to_nvlabs(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Independent inverse of timm's pvt_v2 filter: timm names → NVlabs SegFormer `mit_bN.pth` names."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^patch_embed\.", "patch_embed1.", k)
        k = re.sub(r"^stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.", k)
        k = re.sub(r"^stages\.(\d)\.blocks\.", lambda m: f"block{int(m.group(1)) + 1}.", k)
        k = re.sub(r"^stages\.(\d)\.norm\.", lambda m: f"norm{int(m.group(1)) + 1}.", k)
        k = k.replace(".dwconv.", ".dwconv.dwconv.")
        out[k] = v
    return out


@pytest.fixture(scope="module")
def reference_mit_b0() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("pvt_v2_b0", mlp_ratios=(4, 4, 4, 4), num_classes=1000).eval()


def _features(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model.forward_intermediates(x, intermediates_only=True)


def test_nvlabs_mit_checkpoint_loads_equivalently(reference_mit_b0, tmp_path: Path) -> None:
    sd = _timm_to_nvlabs(reference_mit_b0.state_dict())
    assert "block1.0.mlp.dwconv.dwconv.weight" in sd and "patch_embed4.proj.weight" in sd and "head.weight" in sd
    path = tmp_path / "mit_b0.pth"
    torch.save(sd, path)
    ours = MiTBackbone("mit_b0", pretrained=path).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        got = ours(x)
    for a, b in zip(got, _features(reference_mit_b0, x)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_mmseg_backbone_prefixed_checkpoint(reference_mit_b0, tmp_path: Path) -> None:
    sd = {f"backbone.{k}": v for k, v in _timm_to_nvlabs(reference_mit_b0.state_dict()).items()
          if not k.startswith("head")}  # fmt: skip
    sd["decode_head.conv_seg.weight"] = torch.zeros(19, 256, 1, 1)
    path = tmp_path / "daformer_iter_40000.pth"
    torch.save({"state_dict": sd, "meta": {}}, path)
    ours = MiTBackbone("mit_b0", pretrained=path).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[3], _features(reference_mit_b0, x)[3], atol=1e-5, rtol=0)


def test_checkpoint_that_loads_nothing_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightFileError, match=r"wrong\.pth: no tensor matches"):
        MiTBackbone("mit_b0", pretrained=path)


def test_wrong_variant_is_an_error(reference_mit_b0, tmp_path: Path) -> None:
    path = tmp_path / "mit_b0.pth"
    torch.save(_timm_to_nvlabs(reference_mit_b0.state_dict()), path)
    with pytest.raises(WeightFileError, match="wrong shape"):
        MiTBackbone("mit_b1", pretrained=path)


def test_partial_checkpoint_is_an_error(reference_mit_b0, tmp_path: Path) -> None:
    sd = {k: v for k, v in _timm_to_nvlabs(reference_mit_b0.state_dict()).items() if not k.startswith("block4")}
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(WeightFileError, match="missing from the file"):
        MiTBackbone("mit_b0", pretrained=path)


def test_missing_and_corrupt_weight_files(tmp_path: Path) -> None:
    with pytest.raises(WeightFileError, match="not found"):
        MiTBackbone("mit_b0", pretrained=tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(WeightFileError, match=r"bad\.pth: cannot read"):
        MiTBackbone("mit_b0", pretrained=bad)


def test_deeplab_caffe_resnet_file_loads(tmp_path: Path) -> None:
    ref = timm.create_model("resnet50", num_classes=1000)
    sd = {f"Scale.{k}": v for k, v in ref.state_dict().items() if "num_batches_tracked" not in k}
    sd["Scale.layer5.conv2d_list.0.weight"] = torch.zeros(19, 2048, 3, 3)
    path = tmp_path / "DeepLab_resnet_pretrained_init.pth"
    torch.save(sd, path)
    ours = ResNetBackbone("resnet50", pretrained=path)
    torch.testing.assert_close(ours.body.conv1.weight, ref.conv1.weight)
    assert not ours.body.bn1.weight.requires_grad  # REF: frozen BN affine


def test_whole_segmentor_roundtrip(tmp_path: Path) -> None:
    a = build_segmentor("mit_b0", "segformer", num_classes=7).eval()
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in a.state_dict().items()}}, path)
    b = build_segmentor("mit_b0", "segformer", num_classes=7, weights=path).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x).logits, b(x).logits)
    c = build_segmentor("mit_b0", "segformer", num_classes=19)
    with pytest.raises(WeightFileError, match=r"model\.ckpt"):
        c.load_weights(path)


def test_caffe_bgr_normalisation_matches_reference() -> None:
    x = torch.rand(1, 3, 2, 2)
    bgr255 = x.flip(1) * 255
    mean = torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize("caffe_bgr")(x), (bgr255 - mean) / 128)


def test_daformer_head_has_a_dense_3x3_bottleneck() -> None:
    """DAFormer's ASPPWrapper fuses the concatenated ASPP outputs with a full 3×3 ConvModule (1024→256, BN, ReLU)."""
    from diga.models.heads import DAFormerHead

    head = DAFormerHead([32, 64, 160, 256], 19)
    conv, bn, act = head.bottleneck
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight.shape == (256, 1024, 3, 3) and conv.groups == 1
    assert conv.bias is None and isinstance(bn, torch.nn.BatchNorm2d) and isinstance(act, torch.nn.ReLU)
    # embed MLPs + 1×1 ASPP branch + three separable dilated branches + dense bottleneck + classifier
    embed = sum(c * 256 + 256 for c in (32, 64, 160, 256))
    aspp = 1024 * 256 + 512 + 3 * (1024 * 9 + 2048 + 1024 * 256 + 512)
    expected = embed + aspp + (1024 * 256 * 9 + 512) + (256 * 19 + 19)
    assert sum(p.numel() for p in head.parameters()) == expected
