"""Plain ViT encoders (DINOv2 through timm) with a ViTDet-style simple feature pyramid at strides 4/8/16/32.

A plain ViT has one resolution (the patch grid). The SegFormer/DAFormer heads want four levels, so four blocks
are tapped (`forward_intermediates`, patch tokens only) and each is re-sampled by its own small branch:

=====  ===============================================  ==============  =========
level  branch                                            channels        stride
=====  ===============================================  ==============  =========
0      2×2 transposed conv → LN → GELU → 2×2 transp.     embed_dim / 4   4
1      2×2 transposed conv                               embed_dim / 2   8
2      1×1 conv                                          embed_dim       16
3      2×2 max-pool (ceil mode)                          embed_dim       32
=====  ===============================================  ==============  =========

each followed by a channels-first LayerNorm (batch-independent: DiGA trains with batches of 1–2 per GPU and an
EMA teacher, where BatchNorm statistics are poor). Channel widths follow ViTDet (Li et al. 2022); the
one-layer-per-level taps follow BEiT/DPT (a ViTDet pyramid built from the last block alone throws away the
earlier, more local blocks).

Patch 14 (DINOv2) makes the natural strides 3.5/7/14/28. Every level is therefore bilinearly re-sampled to the
exact size ``ceil(H/s) × ceil(W/s)`` for s = 4, 8, 16, 32 (a 0.875× shrink for levels 0–2), so ``strides`` is the
true ``[4, 8, 16, 32]`` and the maps have the sizes a MiT encoder gives for the same input. The rest of diga
(``Segmentor.output_stride``, label and centroid down-sampling, up-sampling logits to the input) relies on that
integer stride; reporting 3.5 would break it. With patch 16 (``timm_vit``) the re-sampling is a no-op.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from diga.models.registry import register_backbone
from diga.models.weights import WeightFileError, load_into, read_state_dict, strip_prefix

DINOV2_MODELS: dict[str, str] = {
    "dinov2_vit_s": "vit_small_patch14_dinov2",
    "dinov2_vit_b": "vit_base_patch14_dinov2",
    "dinov2_vit_l": "vit_large_patch14_dinov2",
    "dinov2_vit_g": "vit_giant_patch14_dinov2",
    "dinov2_vit_s_reg": "vit_small_patch14_reg4_dinov2",
    "dinov2_vit_b_reg": "vit_base_patch14_reg4_dinov2",
    "dinov2_vit_l_reg": "vit_large_patch14_reg4_dinov2",
    "dinov2_vit_g_reg": "vit_giant_patch14_reg4_dinov2",
}

# The blocks Meta's own dense heads read (dinov2/hub/depthers.py, 4-layer linear and DPT heads), by depth.
_DINOV2_TAPS: dict[int, tuple[int, ...]] = {12: (2, 5, 8, 11), 24: (4, 11, 17, 23), 40: (9, 19, 29, 39)}

PYRAMID_STRIDES = (4, 8, 16, 32)


def default_out_indices(depth: int) -> tuple[int, ...]:
    """Four blocks to tap: the last block of each quarter of the network, as DPT and DINOv2's dense heads do.

    Evenly spaced taps give each pyramid level a different depth of processing (the finest level gets the most
    local, earliest features; the coarsest the most semantic), instead of four near-identical late blocks.
    Known depths use DINOv2's table (12 → 2,5,8,11; 24 → 4,11,17,23; 40 → 9,19,29,39).
    """
    if depth in _DINOV2_TAPS:
        return _DINOV2_TAPS[depth]
    if depth < 4:
        raise ValueError(f"a 4-level pyramid needs at least 4 blocks, the model has {depth}")
    return tuple(max(round(depth * (k + 1) / 4) - 1, k) for k in range(4))


def _ceil_div(a: int, b: int) -> int:
    """⌈a/b⌉ for positive a, b without negative floor division (traced to ONNX, `-(-a // b)` truncates wrongly)."""
    return (a + b - 1) // b


class SimpleFeaturePyramid(nn.Module):
    """Four stride-16-ish token maps → maps at strides 4, 8, 16, 32 (see the module docstring)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        d = embed_dim
        if d % 4:
            raise ValueError(f"embed_dim {d} must be divisible by 4 for the pyramid widths d/4, d/2")
        self.channels = [d // 4, d // 2, d, d]
        self.branches = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(d, d // 2, 2, stride=2),
                    LayerNorm2d(d // 2),
                    nn.GELU(),
                    nn.ConvTranspose2d(d // 2, d // 4, 2, stride=2),
                ),
                nn.ConvTranspose2d(d, d // 2, 2, stride=2),
                nn.Conv2d(d, d, 1),
                nn.MaxPool2d(2, stride=2, ceil_mode=True),
            ]
        )
        self.norms = nn.ModuleList(LayerNorm2d(c) for c in self.channels)

    def forward(self, feats: list[torch.Tensor], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        out = []
        for branch, norm, f, size in zip(self.branches, self.norms, feats, sizes):
            y = branch(f)
            if tuple(y.shape[-2:]) != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out.append(norm(y))
        return out


class ViTBackbone(nn.Module):
    """A timm `VisionTransformer` + simple feature pyramid; `strides == [4, 8, 16, 32]` for any patch size.

    Args:
        model_name: timm model (`vit_small_patch14_dinov2`, …; any `VisionTransformer`).
        pretrained: local weight file — timm's state-dict layout or Meta's DINOv2 layout (`dinov2_vitb14_pretrain.pth`,
            with or without registers, chunked blocks, `backbone.` prefix); position embeddings are resized to the
            model's grid. Strict: anything that leaves an encoder tensor unset is a `WeightFileError`.
        drop_path_rate: stochastic depth (BEiT/DINOv2 segmentation fine-tuning use 0.1–0.3).
        out_indices: the four blocks to tap (default `default_out_indices(depth)`); blocks after the last are dropped.
        norm_intermediates: apply the ViT's final LayerNorm to every tapped block (DINOv2's `get_intermediate_layers`
            default, used by its dense heads).
        pad_to_patch: zero-pad (after normalisation, i.e. with the mean colour) bottom/right to a multiple of the
            patch and crop the pyramid back, instead of raising for such sizes (whole-image / multi-scale inference).
        **timm_kwargs: passed to `timm.create_model` (e.g. `img_size` to store the position grid at another size).
    """

    input_normalization = "imagenet"
    align_corners = False

    def __init__(
        self,
        model_name: str,
        pretrained: str | Path | None = None,
        drop_path_rate: float = 0.1,
        out_indices: tuple[int, ...] | list[int] | None = None,
        norm_intermediates: bool = True,
        pad_to_patch: bool = False,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        vit = timm.create_model(
            model_name,
            pretrained=False,
            num_classes=0,
            dynamic_img_size=True,  # any size the patch divides; position embeddings are resampled per forward
            drop_path_rate=drop_path_rate,
            **timm_kwargs,
        )
        if not isinstance(vit, VisionTransformer):
            raise ValueError(f"{model_name!r} is a {type(vit).__name__}, not a timm VisionTransformer")
        patch = vit.patch_embed.patch_size
        if patch[0] != patch[1]:
            raise ValueError(f"{model_name!r}: non-square patches {patch} are not supported")
        self.patch_size: int = patch[0]
        depth = len(vit.blocks)
        taps = tuple(out_indices) if out_indices is not None else default_out_indices(depth)
        if len(taps) != 4 or list(taps) != sorted(set(taps)) or taps[0] < 0 or taps[-1] >= depth:
            raise ValueError(f"out_indices must be 4 increasing block indices in [0, {depth}), got {taps}")
        self.out_indices: list[int] = list(taps)
        self.norm_intermediates = norm_intermediates
        self.pad_to_patch = pad_to_patch
        # drop blocks after the last tap (and the final norm when unused): no compute, no unused DDP parameters
        vit.prune_intermediate_layers(self.out_indices, prune_norm=not norm_intermediates, prune_head=True)
        self.vit = vit
        self.embed_dim: int = vit.embed_dim
        self.pyramid = SimpleFeaturePyramid(self.embed_dim)
        self.channels: list[int] = list(self.pyramid.channels)
        self.strides: list[int] = list(PYRAMID_STRIDES)
        if pretrained:
            self.load_pretrained(pretrained)

    @property
    def num_layers(self) -> int:
        """Layer count for layer-wise LR decay: embeddings (0), one per kept block, and the top (pyramid, norm)."""
        return len(self.vit.blocks) + 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            if not self.pad_to_patch:
                raise ValueError(
                    f"{self.model_name}: input size {h}×{w} is not divisible by the patch size {p}; use crops and "
                    f"images whose sides are multiples of {p} (e.g. {p * math.ceil(h / p)}×{p * math.ceil(w / p)}) "
                    "or pad_to_patch=True"
                )
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        hp, wp = x.shape[-2:]
        feats = self.vit.forward_intermediates(
            x, indices=self.out_indices, norm=self.norm_intermediates, output_fmt="NCHW", intermediates_only=True
        )
        sizes = [(_ceil_div(hp, s), _ceil_div(wp, s)) for s in self.strides]
        out = self.pyramid(feats, sizes)
        if (hp, wp) != (h, w):  # same grid origin, so cropping the padded maps keeps alignment
            out = [y[..., : _ceil_div(h, s), : _ceil_div(w, s)] for y, s in zip(out, self.strides)]
        return out

    def fix_input_size(self, height: int, width: int) -> None:
        """Freeze the model at one input size (ONNX export): the position embedding is resampled once, here, instead
        of by a bicubic anti-aliased interpolation in every forward (an operator ONNX does not have)."""
        from timm.layers import Format, resample_abs_pos_embed

        p, vit = self.patch_size, self.vit
        grid = (math.ceil(height / p), math.ceil(width / p))
        with torch.no_grad():
            prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
            old = list(vit.patch_embed.grid_size)
            fixed = resample_abs_pos_embed(vit.pos_embed, new_size=list(grid), old_size=old, num_prefix_tokens=prefix)
        vit.pos_embed = nn.Parameter(fixed, requires_grad=vit.pos_embed.requires_grad)
        pe = vit.patch_embed
        pe.img_size, pe.grid_size, pe.num_patches = (grid[0] * p, grid[1] * p), grid, grid[0] * grid[1]
        pe.flatten, pe.output_fmt, pe.dynamic_img_pad, pe.strict_img_size = True, Format.NCHW, False, True
        vit.dynamic_img_size = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer block in the backward pass (timm's ViT checkpointing; the pyramid is cheap)."""
        self.vit.set_grad_checkpointing(enable)

    # -- weights ------------------------------------------------------------------------------------------------

    def load_pretrained(self, path: str | Path) -> int:
        """Load the ViT (not the pyramid, which is new) from a timm or Meta DINOv2 file; returns tensors loaded."""
        sd = vit_checkpoint_to_timm(read_state_dict(path), self.vit, path)
        return load_into(self.vit, sd, path, f"{self.model_name} encoder")

    # -- optimisation -------------------------------------------------------------------------------------------

    def layer_id(self, name: str) -> int:
        """Depth of a parameter (name relative to this module) for layer-wise LR decay, BEiT/MAE convention."""
        if name.startswith("vit."):
            n = name[len("vit.") :]
            if n.startswith(("patch_embed.", "cls_token", "reg_token", "pos_embed", "mask_token")):
                return 0
            m = re.match(r"blocks\.(\d+)\.", n)
            if m:
                return int(m.group(1)) + 1
        return self.num_layers  # final norm, pyramid

    def layer_decay_groups(self, decay: float, no_weight_decay: bool = True) -> list[dict[str, Any]]:
        """Optimiser param groups with layer-wise LR decay (BEiT, MAE, DINOv2 fine-tuning).

        Layer 0 = patch/position embeddings and tokens, block i = layer i + 1, the final norm and the pyramid = top
        (`num_layers`); `lr_scale = decay ** (num_layers - layer)`, so the top trains at the base LR. With
        `no_weight_decay`, biases, norm/LayerScale weights (1-D) and position embeddings/tokens go to separate groups
        with `weight_decay: 0.0`; other groups carry no `weight_decay` key (the optimiser's default applies).
        Every trainable parameter appears exactly once. The caller sets `lr = base_lr * lr_scale` per group.
        """
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"layer decay must be in (0, 1], got {decay}")
        skip = {f"vit.{n}" for n in self.vit.no_weight_decay()}
        groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            nd = no_weight_decay and (p.ndim <= 1 or name in skip)
            groups.setdefault((self.layer_id(name), nd), []).append(p)
        out = []
        for (lid, nd), params in sorted(groups.items()):
            g: dict[str, Any] = {
                "name": f"backbone.layer{lid}" + (".no_decay" if nd else ""),
                "params": params,
                "lr_scale": decay ** (self.num_layers - lid),
            }
            if nd:
                g["weight_decay"] = 0.0
            out.append(g)
        return out


def vit_checkpoint_to_timm(
    sd: dict[str, torch.Tensor], model: VisionTransformer, path: str | Path
) -> dict[str, torch.Tensor]:
    """Any supported ViT layout → `model`'s timm names, through timm's own `checkpoint_filter_fn`.

    Handled here before timm's filter: an mmseg-style `backbone.` prefix, DINOv2's FSDP-chunked block names
    (`blocks.<chunk>.<i>.` → `blocks.<i>.`), and the checks timm would silently work around (it re-samples a
    different patch size, and a register/no-register mismatch would garble the position embedding).
    timm's filter then maps Meta's layout (drops `mask_token`; `register_tokens` → `reg_token` with the class
    position folded into `cls_token`; SwiGLU `w12`/`w3` → `fc1`/`fc2`) and resizes `pos_embed` (e.g. 37×37 from
    518-px training) to the model's grid (bicubic).
    """
    if "pos_embed" not in sd and any(k.startswith("backbone.") for k in sd):
        sd = strip_prefix(sd, "backbone.")
    if any(re.match(r"blocks\.\d+\.\d+\.", k) for k in sd):
        sd = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in sd.items()}
    w = sd.get("patch_embed.proj.weight")
    own = model.patch_embed.proj.weight
    if w is not None and w.ndim == 4 and tuple(w.shape[-2:]) != tuple(own.shape[-2:]):
        raise WeightFileError(
            f"{path}: patch size {tuple(w.shape[-2:])} in the file, {tuple(own.shape[-2:])} in the model"
        )
    file_regs = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    file_regs = sd["reg_token"].shape[1] if "reg_token" in sd else file_regs
    model_regs = 0 if model.reg_token is None else model.reg_token.shape[1]
    if file_regs != model_regs:
        raise WeightFileError(f"{path}: {file_regs} register tokens in the file, {model_regs} in the model")
    try:
        return checkpoint_filter_fn(dict(sd), model)
    except Exception as e:  # timm's filter asserts/raises on layouts it cannot map
        raise WeightFileError(
            f"{path}: cannot map the file onto {type(model).__name__} ({type(e).__name__}: {e})"
        ) from e


@register_backbone("dinov2_vit_s", weights_file="dinov2_vits14_pretrain.pth")
def dinov2_vit_s(**kwargs: Any) -> ViTBackbone:
    """DINOv2 ViT-S/14 (384-d, 12 blocks, 22 M parameters); kwargs as `ViTBackbone`."""
    return ViTBackbone(DINOV2_MODELS["dinov2_vit_s"], **kwargs)


@register_backbone("dinov2_vit_b", weights_file="dinov2_vitb14_pretrain.pth")
def dinov2_vit_b(**kwargs: Any) -> ViTBackbone:
    """DINOv2 ViT-B/14 (768-d, 12 blocks, 86 M); kwargs as `ViTBackbone`."""
    return ViTBackbone(DINOV2_MODELS["dinov2_vit_b"], **kwargs)


@register_backbone("dinov2_vit_l", weights_file="dinov2_vitl14_pretrain.pth")
def dinov2_vit_l(**kwargs: Any) -> ViTBackbone:
    """DINOv2 ViT-L/14 (1024-d, 24 blocks, 300 M); kwargs as `ViTBackbone`."""
    return ViTBackbone(DINOV2_MODELS["dinov2_vit_l"], **kwargs)


@register_backbone("dinov2_vit_g", weights_file="dinov2_vitg14_pretrain.pth")
def dinov2_vit_g(**kwargs: Any) -> ViTBackbone:
    """DINOv2 ViT-g/14 (1536-d, 40 blocks, SwiGLU, 1.1 B); kwargs as `ViTBackbone`."""
    return ViTBackbone(DINOV2_MODELS["dinov2_vit_g"], **kwargs)


@register_backbone("dinov2_vit_s_reg", weights_file="dinov2_vits14_reg4_pretrain.pth")
def dinov2_vit_s_reg(**kwargs: Any) -> ViTBackbone:
    """DINOv2 ViT-S/14 with 4 registers (384-d, 12 blocks, 22 M parameters); kwargs as `ViTBackbone`."""
    return ViTBackbone(DINOV2_MODELS["dinov2_vit_s_reg"], **kwargs)


@register_backbone("dinov2_vit_b_reg", weights_file="dinov2_vitb14_reg4_pretrain.pth")
def dinov2_vit_b_reg(**kwargs: Any) -> ViTBackbone:
    """DINOv2 ViT-B/14 with 4 registers (768-d, 12 blocks, 86 M); kwargs as `ViTBackbone`."""
    return ViTBackbone(DINOV2_MODELS["dinov2_vit_b_reg"], **kwargs)


@register_backbone("dinov2_vit_l_reg", weights_file="dinov2_vitl14_reg4_pretrain.pth")
def dinov2_vit_l_reg(**kwargs: Any) -> ViTBackbone:
    """DINOv2 ViT-L/14 with 4 registers (1024-d, 24 blocks, 300 M); kwargs as `ViTBackbone`."""
    return ViTBackbone(DINOV2_MODELS["dinov2_vit_l_reg"], **kwargs)


@register_backbone("dinov2_vit_g_reg", weights_file="dinov2_vitg14_reg4_pretrain.pth")
def dinov2_vit_g_reg(**kwargs: Any) -> ViTBackbone:
    """DINOv2 ViT-g/14 with 4 registers (1536-d, 40 blocks, SwiGLU, 1.1 B); kwargs as `ViTBackbone`."""
    return ViTBackbone(DINOV2_MODELS["dinov2_vit_g_reg"], **kwargs)


@register_backbone("timm_vit")
def timm_vit(model_name: str, **kwargs: Any) -> ViTBackbone:
    """Any timm `VisionTransformer` (e.g. `vit_base_patch16_224`) with the same pyramid, by name from a YAML."""
    return ViTBackbone(model_name, **kwargs)
