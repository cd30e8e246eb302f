"""DINOv2 / timm-ViT encoders with a simple feature pyramid, and the generic `timm` CNN encoder (CPU, random init)."""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from diga.models.backbones.timm_features import TimmFeatures
from diga.models.backbones.vit import (
    ViTBackbone,
    default_out_indices,
    dinov2_vit_b,
    dinov2_vit_g,
    dinov2_vit_l,
    dinov2_vit_s,
    dinov2_vit_s_reg,
    timm_vit,
)
from diga.models.heads.daformer import DAFormerHead
from diga.models.heads.segformer import SegFormerHead
from diga.models.registry import create_backbone, list_backbones
from diga.models.segmentor import Segmentor
from diga.models.weights import WeightFileError

TOL = 1e-5


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These ops are tiny (tens of tokens): a second intra-op thread only spins, and on a shared CPU the spinning
    costs 10-25× (measured). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def vit_s() -> ViTBackbone:
    """Full-depth DINOv2 ViT-S/14 (random init), built once; tests that change it take a deepcopy."""
    torch.manual_seed(0)
    return dinov2_vit_s(drop_path_rate=0.0).eval()


def _features(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(x)


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [t.shape for t in a] == [t.shape for t in b]
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# -- pyramid geometry ----------------------------------------------------------------------------------------------


def test_registered_names() -> None:
    names = list_backbones()
    for name in ("dinov2_vit_s", "dinov2_vit_b", "dinov2_vit_l", "dinov2_vit_s_reg", "timm_vit", "timm"):
        assert name in names
    vit = create_backbone("dinov2_vit_s", depth=4)
    assert isinstance(vit, ViTBackbone) and vit.model_name == "vit_small_patch14_dinov2"
    cnn = create_backbone("timm", model_name="resnet18")
    assert isinstance(cnn, TimmFeatures) and cnn.strides == [4, 8, 16, 32]


@pytest.mark.parametrize("hw", [(56, 112), (70, 42), (28, 56)])
def test_pyramid_sizes_are_exact_ceil_strides(vit_s: ViTBackbone, hw: tuple[int, int]) -> None:
    assert vit_s.strides == [4, 8, 16, 32]
    assert vit_s.channels == [96, 192, 384, 384]
    assert vit_s.out_indices == [2, 5, 8, 11]
    assert vit_s.input_normalization == "imagenet" and vit_s.align_corners is False
    h, w = hw
    out = _features(vit_s, torch.randn(2, 3, h, w))
    assert len(out) == 4
    for f, c, s in zip(out, vit_s.channels, vit_s.strides):
        assert f.shape == (2, c, _ceil(h, s), _ceil(w, s))
        assert torch.isfinite(f).all()


def test_sizes_not_divisible_by_the_patch_raise(vit_s: ViTBackbone) -> None:
    with pytest.raises(ValueError, match=r"64×100 is not divisible by the patch size 14"):
        vit_s(torch.randn(1, 3, 64, 100))


def test_pad_to_patch_crops_back_to_the_input_grid(vit_s: ViTBackbone) -> None:
    padded = copy.deepcopy(vit_s)
    padded.pad_to_patch = True
    x = torch.randn(1, 3, 64, 100)
    out = _features(padded, x)
    assert [tuple(f.shape[-2:]) for f in out] == [(16, 25), (8, 13), (4, 7), (2, 4)]
    # what it computes is the padded image's pyramid, cropped top-left
    ref = _features(vit_s, F.pad(x, (0, 12, 0, 6)))
    assert _max_diff(out, [r[..., : f.shape[-2], : f.shape[-1]] for r, f in zip(ref, out)]) == 0.0


def test_default_taps() -> None:
    assert default_out_indices(12) == (2, 5, 8, 11)
    assert default_out_indices(24) == (4, 11, 17, 23)
    assert default_out_indices(40) == (9, 19, 29, 39)
    assert default_out_indices(4) == (0, 1, 2, 3)
    assert default_out_indices(16) == (3, 7, 11, 15)
    with pytest.raises(ValueError, match="at least 4 blocks"):
        default_out_indices(3)
    with pytest.raises(ValueError, match="4 increasing block indices"):
        dinov2_vit_s(depth=4, out_indices=(0, 1, 2, 4))


def test_blocks_after_the_last_tap_are_dropped() -> None:
    m = dinov2_vit_s(depth=6, out_indices=(0, 1, 2, 3), norm_intermediates=False)
    assert len(m.vit.blocks) == 4
    assert isinstance(m.vit.norm, torch.nn.Identity)


@pytest.mark.parametrize(
    ("build", "dim", "taps"),
    [(dinov2_vit_b, 768, [2, 5, 8, 11]), (dinov2_vit_l, 1024, [4, 11, 17, 23]), (dinov2_vit_g, 1536, [9, 19, 29, 39])],
)
def test_larger_variants_on_the_meta_device(build, dim: int, taps: list[int]) -> None:
    """Shapes only (no memory, no compute): the same pyramid for ViT-B/L/g."""
    with torch.device("meta"):
        m = build()
        out = m(torch.empty(1, 3, 56, 84))
    assert m.embed_dim == dim and m.out_indices == taps
    assert m.channels == [dim // 4, dim // 2, dim, dim]
    assert [tuple(f.shape) for f in out] == [(1, c, _ceil(56, s), _ceil(84, s)) for c, s in zip(m.channels, m.strides)]


def test_timm_vit_patch16_needs_no_resampling() -> None:
    m = timm_vit("vit_tiny_patch16_224", depth=4, drop_path_rate=0.0).eval()
    assert m.patch_size == 16 and m.channels == [48, 96, 192, 192]
    out = _features(m, torch.randn(1, 3, 32, 64))
    assert [tuple(f.shape[-2:]) for f in out] == [(8, 16), (4, 8), (2, 4), (1, 2)]


# -- whole network -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head_cls", [DAFormerHead, SegFormerHead])
@pytest.mark.parametrize("hw", [(56, 112), (70, 42)])
def test_segmentor_forward_and_backward(vit_s: ViTBackbone, head_cls, hw: tuple[int, int]) -> None:
    backbone = copy.deepcopy(vit_s).train()
    head = head_cls(backbone.channels, 5, embed_dim=32)
    model = Segmentor(backbone, head, num_classes=5, normalization=backbone.input_normalization)
    h, w = hw
    out = model(torch.rand(2, 3, h, w))
    assert model.output_stride == 4
    assert out.logits.shape == (2, 5, _ceil(h, 4), _ceil(w, 4))
    assert out.feat.shape == (2, 32, _ceil(h, 4), _ceil(w, 4))
    up = F.interpolate(out.logits, size=(h, w), mode="bilinear", align_corners=backbone.align_corners)
    assert up.shape[-2:] == (h, w)
    up.logsumexp(1).mean().backward()
    # every trainable parameter takes part (no unused parameters under DDP)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_grad_checkpointing_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = dinov2_vit_s(depth=4, drop_path_rate=0.2).train()  # stochastic depth: RNG must replay under recompute
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    assert ckpt.vit.grad_checkpointing and not plain.vit.grad_checkpointing
    x = torch.randn(2, 3, 28, 56)
    weights = [torch.randn(2, c, _ceil(28, s), _ceil(56, s)) for c, s in zip(plain.channels, plain.strides)]
    outs = []
    for m in (plain, ckpt):
        torch.manual_seed(1)
        out = m(x)
        sum((o * wt).sum() for o, wt in zip(out, weights)).backward()
        outs.append(out)
    assert _max_diff(outs[0], outs[1]) <= 1e-6
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5), n


# -- layer-wise LR decay -------------------------------------------------------------------------------------------


def test_layer_decay_groups_cover_every_parameter_once(vit_s: ViTBackbone) -> None:
    m = copy.deepcopy(vit_s)
    m.vit.patch_embed.proj.bias.requires_grad_(False)  # frozen parameters are left out
    groups = m.layer_decay_groups(0.65)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    scales = [g["lr_scale"] for g in groups]
    assert scales == sorted(scales) and scales[-1] == 1.0
    assert m.num_layers == 13 and scales[0] == pytest.approx(0.65**13)
    names = {id(p): n for n, p in m.named_parameters()}
    for g in groups:
        for p in g["params"]:
            lid = m.layer_id(names[id(p)])
            assert g["lr_scale"] == pytest.approx(0.65 ** (13 - lid))
            no_decay = p.ndim <= 1 or names[id(p)] in ("vit.pos_embed", "vit.cls_token")
            assert ("weight_decay" in g) == no_decay and g.get("weight_decay", 0.0) == 0.0
    by_name = {names[id(p)]: g["lr_scale"] for g in groups for p in g["params"]}
    assert by_name["vit.pos_embed"] == by_name["vit.patch_embed.proj.weight"] == scales[0]
    assert by_name["vit.blocks.0.attn.qkv.weight"] == pytest.approx(0.65**12)
    assert by_name["vit.blocks.11.mlp.fc2.weight"] == pytest.approx(0.65)
    assert by_name["pyramid.branches.2.weight"] == by_name["vit.norm.weight"] == 1.0
    # usable as-is by a torch optimiser once lr is set per group
    opt = torch.optim.AdamW([{**g, "lr": 1e-4 * g["lr_scale"]} for g in groups], weight_decay=0.05)
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="layer decay"):
        m.layer_decay_groups(0.0)
    flat = m.layer_decay_groups(1.0, no_weight_decay=False)
    assert {g["lr_scale"] for g in flat} == {1.0} and all("weight_decay" not in g for g in flat)


# -- weight layouts ------------------------------------------------------------------------------------------------


def _to_meta_layout(timm_sd: dict[str, torch.Tensor], block_chunks: int = 0) -> dict[str, torch.Tensor]:
    """timm names → Meta's DINOv2 checkpoint names (facebookresearch/dinov2, dinov2/models/vision_transformer.py).

    Meta keeps the class-token position inside `pos_embed` (1 + N entries) and adds it to `cls_token` at run time;
    with registers, timm folds that position into `cls_token` instead (its pos_embed has N entries). The inverse
    here picks a random class position and subtracts it. `mask_token` is Meta-only; `block_chunks` > 0 writes the
    FSDP-chunked names `blocks.<chunk>.<global index>.`.
    """
    sd = {k: v.clone() for k, v in timm_sd.items()}
    dim = sd["cls_token"].shape[-1]
    if "reg_token" in sd:
        cls_pos = 0.02 * torch.randn(1, 1, dim)
        sd["register_tokens"] = sd.pop("reg_token")
        sd["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
        sd["cls_token"] = sd["cls_token"] - cls_pos
    sd["mask_token"] = torch.randn(1, dim)
    if block_chunks:
        depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
        size = depth // block_chunks
        sd = {
            re.sub(r"^blocks\.(\d+)\.", lambda m: f"blocks.{int(m.group(1)) // size}.{m.group(1)}.", k): v
            for k, v in sd.items()
        }
    assert not any(k.startswith("reg_token") for k in sd)
    return sd


def _source(name: str, depth: int = 4, **kw) -> torch.nn.Module:
    torch.manual_seed(1)
    m = timm.create_model(name, pretrained=False, num_classes=0, depth=depth, dynamic_img_size=True, **kw)
    with torch.no_grad():  # init leaves LayerScale at 1e-5 and biases at 0: randomise so every tensor matters
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _reference_feats(src: torch.nn.Module, bb: ViTBackbone, x: torch.Tensor) -> list[torch.Tensor]:
    """The source ViT's own tapped blocks, through `bb`'s pyramid: what loading must reproduce."""
    with torch.no_grad():
        taps = src.forward_intermediates(x, indices=bb.out_indices, norm=True, intermediates_only=True)
        sizes = [(_ceil(x.shape[-2], s), _ceil(x.shape[-1], s)) for s in bb.strides]
        return bb.pyramid(taps, sizes)


@pytest.mark.parametrize(
    ("name", "build"), [("vit_small_patch14_dinov2", dinov2_vit_s), ("vit_small_patch14_reg4_dinov2", dinov2_vit_s_reg)]
)
def test_meta_and_timm_layouts_load_to_the_same_features(name: str, build, tmp_path: Path) -> None:
    src = _source(name)
    torch.manual_seed(2)
    base = build(depth=4, drop_path_rate=0.0).eval()
    x = torch.randn(1, 3, 56, 84)
    ref = _reference_feats(src, base, x)
    layouts = {
        "timm": src.state_dict(),
        "meta": _to_meta_layout(src.state_dict()),
        "meta_chunked": _to_meta_layout(src.state_dict(), block_chunks=2),
        "mmseg": {f"backbone.{k}": v for k, v in _to_meta_layout(src.state_dict()).items()}
        | {"decode_head.conv_seg.weight": torch.zeros(3, 3, 1, 1)},
    }
    diffs = {}
    for layout, sd in layouts.items():
        path = tmp_path / f"{layout}.pth"
        torch.save(sd, path)
        bb = copy.deepcopy(base)
        assert bb.load_pretrained(path) == len(bb.vit.state_dict())
        diffs[layout] = _max_diff(_features(bb, x), ref)
    print(f"{name}: max |Δ| vs the source ViT: {diffs}")
    assert max(diffs.values()) <= TOL, diffs


def test_meta_pos_embed_is_resized_to_the_model_grid(tmp_path: Path) -> None:
    """A 37×37 (518-px) file into a model stored at 16×16 equals the 37×37 model resampled on the fly."""
    src = _source("vit_small_patch14_dinov2")
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(_to_meta_layout(src.state_dict()), path)
    torch.manual_seed(2)
    native = dinov2_vit_s(depth=4, drop_path_rate=0.0).eval()
    small = dinov2_vit_s(depth=4, drop_path_rate=0.0, img_size=224).eval()
    small.pyramid.load_state_dict(native.pyramid.state_dict())
    native.load_pretrained(path)
    small.load_pretrained(path)
    assert small.vit.pos_embed.shape == (1, 1 + 16 * 16, 384) and native.vit.pos_embed.shape == (1, 1 + 37 * 37, 384)
    x = torch.randn(1, 3, 224, 224)
    diff = _max_diff(_features(small, x), _features(native, x))
    print(f"pos-embed resize at load vs on the fly: max |Δ| {diff:.2e}")
    assert diff <= TOL


def test_bad_vit_files_raise_checkpoint_error(tmp_path: Path) -> None:
    src = _source("vit_small_patch14_dinov2")
    bb = dinov2_vit_s(depth=4)
    good = _to_meta_layout(src.state_dict())

    def write(name: str, sd: dict[str, torch.Tensor]) -> Path:
        torch.save(sd, tmp_path / name)
        return tmp_path / name

    cases = {
        "unrelated.pth": ({"foo.weight": torch.zeros(3)}, "no tensor matches"),
        "missing.pth": ({k: v for k, v in good.items() if k != "blocks.1.ls1.gamma"}, "missing"),
        "shape.pth": ({**good, "blocks.0.attn.qkv.weight": torch.zeros(3, 384)}, "wrong shape"),
        "patch16.pth": ({**good, "patch_embed.proj.weight": torch.zeros(384, 3, 16, 16)}, "patch size"),
        "registers.pth": (_to_meta_layout(_source("vit_small_patch14_reg4_dinov2").state_dict()), "register tokens"),
        "deeper.pth": (_source("vit_small_patch14_dinov2", depth=6).state_dict(), None),  # extra blocks: fine
    }
    for name, (sd, msg) in cases.items():
        path = write(name, sd)
        if msg is None:
            assert bb.load_pretrained(path) == len(bb.vit.state_dict())
            continue
        with pytest.raises(WeightFileError, match=re.escape(str(path))) as err:
            bb.load_pretrained(path)
        assert msg in str(err.value), (name, str(err.value))
    with pytest.raises(WeightFileError, match="not found"):
        bb.load_pretrained(tmp_path / "absent.pth")
    shallow = write("shallow.pth", _source("vit_small_patch14_dinov2", depth=2).state_dict())
    with pytest.raises(WeightFileError, match="missing"):
        bb.load_pretrained(shallow)


def test_pretrained_argument_loads_at_construction(tmp_path: Path) -> None:
    src = _source("vit_small_patch14_dinov2")
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    bb = dinov2_vit_s(depth=4, pretrained=path)
    assert torch.equal(bb.vit.blocks[3].mlp.fc2.weight, src.blocks[3].mlp.fc2.weight)


# -- generic timm encoder ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "channels"), [("convnext_atto", [40, 80, 160, 320]), ("resnet18", [64, 128, 256, 512])]
)
def test_timm_encoder_reports_what_it_returns(name: str, channels: list[int]) -> None:
    enc = TimmFeatures(name, drop_path_rate=0.1).eval()
    assert enc.channels == channels and enc.strides == [4, 8, 16, 32]
    h, w = 64, 96
    out = _features(enc, torch.randn(2, 3, h, w))
    assert [tuple(f.shape) for f in out] == [(2, c, h // s, w // s) for c, s in zip(enc.channels, enc.strides)]
    model = Segmentor(enc, DAFormerHead(enc.channels, 4, embed_dim=16), num_classes=4).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, h, w)).logits.shape == (1, 4, 16, 24)


def test_timm_encoder_out_indices_and_grad_checkpointing() -> None:
    enc = TimmFeatures("resnet18", out_indices=(2, 3, 4))
    assert enc.channels == [128, 256, 512] and enc.strides == [8, 16, 32]
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    ref = enc(x)
    ref_grad = torch.autograd.grad(sum(f.sum() for f in ref), enc.body.conv1.weight)[0]
    enc.set_grad_checkpointing(True)
    torch.manual_seed(0)
    out = enc(x)
    grad = torch.autograd.grad(sum(f.sum() for f in out), enc.body.conv1.weight)[0]
    assert _max_diff(out, ref) <= 1e-6 and torch.allclose(grad, ref_grad, atol=1e-5, rtol=1e-5)


def test_timm_encoder_without_drop_path_warns() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TimmFeatures("ghostnet_050", drop_path_rate=0.1)
    assert any("does not take drop_path_rate" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmFeatures("no_such_model_xyz")


def _timm_convnext_to_fb(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt names → the original facebookresearch/ConvNeXt checkpoint names (Linear point-wise convs)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("stem.", "downsample_layers.0.")
        k = re.sub(r"stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", k)
        k = re.sub(r"stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", k)
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        k = k.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        if "pwconv" in k and v.ndim == 4:
            v = v.flatten(1)
        out[k] = v
    return out


def test_timm_encoder_weight_layouts(tmp_path: Path) -> None:
    torch.manual_seed(3)
    full = timm.create_model("convnext_atto", pretrained=False).eval()
    timm_path, fb_path, feat_path = tmp_path / "timm.pth", tmp_path / "fb.pth", tmp_path / "feat.pth"
    torch.save(full.state_dict(), timm_path)
    torch.save({"model": _timm_convnext_to_fb(full.state_dict())}, fb_path)
    # reference: timm's own pretrained-file path into a features model
    ref_model = timm.create_model(
        "convnext_atto",
        pretrained=True,
        features_only=True,
        out_indices=4,
        pretrained_cfg_overlay={"file": str(timm_path)},
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    ref = _features(ref_model, x)
    torch.save({f"backbone.body.{k}": v for k, v in ref_model.state_dict().items()}, feat_path)
    diffs = {}
    for layout, path in (("timm", timm_path), ("facebook", fb_path), ("features", feat_path)):
        enc = TimmFeatures("convnext_atto", pretrained=path).eval()
        diffs[layout] = _max_diff(_features(enc, x), ref)
    print(f"convnext_atto layouts: max |Δ| vs timm's own loading: {diffs}")
    assert max(diffs.values()) <= TOL

    enc = TimmFeatures("convnext_atto")
    bad = {
        "keys.pth": {f"x{k}": v for k, v in full.state_dict().items()},
        "other_arch.pth": timm.create_model("resnet18", pretrained=False).state_dict(),
        "partial.pth": {k: v for k, v in full.state_dict().items() if "stages.3.blocks.1." not in k},
    }
    for name, sd in bad.items():
        torch.save(sd, tmp_path / name)
        with pytest.raises(WeightFileError, match=re.escape(str(tmp_path / name))):
            enc.load_pretrained(tmp_path / name)
