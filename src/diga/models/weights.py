"""Loading weights from local files, with a hard error whenever a file does not fit.

Supported layouts (detected from the keys):
* official SegFormer/MiT ImageNet checkpoints (`patch_embed1.*`, `block1.0.*`, …; NVlabs `mit_b*.pth`);
* timm `pvt_v2_*` state dicts (`stages.0.blocks.0.*`);
* mmseg / DAFormer training checkpoints (`{"state_dict": {"backbone.…", "decode_head.…"}}`) — backbone part;
* torchvision/timm ResNet and the DeepLab/AdaptSegNet `Scale.`-prefixed ResNet-101 file;
* Hugging Face SegFormer/MiT files, folders and cached Hub ids (`diga.models.hf_segformer`);
* diga's own checkpoints (Lightning `.ckpt` or exported `.pt`), for the whole segmentor.

"Loads nothing" and "loads part of the backbone" are errors, never warnings (timm only logs them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn


class WeightFileError(RuntimeError):
    """A weight or checkpoint file (pretrained weights, diga model, centroids, translator) that cannot be used. The
    message names the file."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensor dict from a .pth/.pt/.ckpt/.safetensors file, unwrapping the usual containers.

    `path` may also be a Hugging Face `save_pretrained` folder or a Hub model id in the local cache (offline)."""
    if not Path(path).is_file():
        from diga.models.hf_segformer import resolve_weight_source

        path = resolve_weight_source(path)
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightFileError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightFileError(f"{path}: no state dict inside")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def load_into(
    module: nn.Module,
    sd: Mapping[str, torch.Tensor],
    path: str | Path,
    what: str,
    allow_missing: tuple[str, ...] = ("num_batches_tracked",),
) -> int:
    """Strict-by-default load: every parameter/buffer of `module` must come from the file with the right shape.

    Keys in the file that the module does not have (classifier heads, decode heads) are ignored.
    Returns the number of tensors loaded.
    """
    own = module.state_dict()
    matched = {k: v for k, v in sd.items() if k in own}
    if not matched:
        sample = ", ".join(list(sd)[:3])
        raise WeightFileError(f"{path}: no tensor matches the {what} (file keys look like: {sample})")
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in matched.items()
        if v.shape != own[k].shape
    ]
    if bad:
        raise WeightFileError(f"{path}: {len(bad)} tensors have the wrong shape for the {what}, e.g. {bad[0]}")
    missing = [k for k in own if k not in matched and not any(a in k for a in allow_missing)]
    if missing:
        raise WeightFileError(
            f"{path}: {len(missing)} of {len(own)} {what} tensors are missing from the file, e.g. {missing[:3]}"
        )
    module.load_state_dict(matched, strict=False)
    return len(matched)


_MIT_ORIGINAL = re.compile(r"^(patch_embed[1-4]|block[1-4]|norm[1-4])\.")


def mit_to_timm_features(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any MiT/PVTv2 layout → the key names of timm's `pvt_v2_*` *features_only* model."""
    if any(k.startswith("backbone.") for k in sd):  # mmseg / DAFormer training checkpoint
        sd = strip_prefix(sd, "backbone.")
    if any(_MIT_ORIGINAL.match(k) for k in sd):
        sd = _mit_original_to_timm(sd)
    out = {}
    for k, v in sd.items():
        if k.startswith("head."):
            continue
        out[re.sub(r"^stages\.(\d+)\.", r"stages_\1.", k)] = v
    return out


def _mit_original_to_timm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVlabs SegFormer `MixVisionTransformer` names → timm `pvt_v2` names (as timm's checkpoint_filter_fn)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("patch_embed1."):
            k = k.replace("patch_embed1.", "patch_embed.")
        k = re.sub(r"^patch_embed([2-4])\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample.", k)
        k = re.sub(r"^block([1-4])\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.", k)
        k = re.sub(r"^norm([1-4])\.", lambda m: f"stages.{int(m.group(1)) - 1}.norm.", k)
        k = k.replace("dwconv.dwconv", "dwconv")
        out[k] = v
    return out


def resnet_to_timm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision/timm/DeepLab-caffe ResNet keys → timm `resnet*` features keys."""
    if any(k.startswith("backbone.") for k in sd):
        sd = strip_prefix(sd, "backbone.")
    if all(k.split(".", 1)[0] in ("Scale", "module") for k in sd):  # AdaptSegNet DeepLab file: strip first part
        sd = {k.split(".", 1)[1]: v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not k.startswith(("layer5", "fc."))}


def daformer_head_from_mmseg(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DAFormer/mmseg `decode_head.*` keys of a DAFormerHead → the names of `diga.models.heads.DAFormerHead`.

    mmcv's ConvModule is conv → bn (→ act); a DepthwiseSeparableConvModule is a depthwise and a pointwise ConvModule.
    Used to evaluate or fine-tune DAFormer-trained models and to compare the head with the authors' implementation.
    """
    out = {}
    for k, v in sd.items():
        if k.startswith("decode_head."):
            k = k[len("decode_head.") :]
        k = re.sub(r"^embed_layers\.(\d+)\.", r"embed.\1.", k)
        k = re.sub(r"^fuse_layer\.aspp_modules\.(\d+)\.depthwise_conv\.(conv|bn)\.",
                   lambda m: f"aspp.{m.group(1)}.0.{'0' if m.group(2) == 'conv' else '1'}.", k)  # fmt: skip
        k = re.sub(r"^fuse_layer\.aspp_modules\.(\d+)\.pointwise_conv\.(conv|bn)\.",
                   lambda m: f"aspp.{m.group(1)}.1.{'0' if m.group(2) == 'conv' else '1'}.", k)  # fmt: skip
        k = re.sub(r"^fuse_layer\.aspp_modules\.(\d+)\.(conv|bn)\.",
                   lambda m: f"aspp.{m.group(1)}.{'0' if m.group(2) == 'conv' else '1'}.", k)  # fmt: skip
        k = re.sub(r"^fuse_layer\.bottleneck\.(conv|bn)\.",
                   lambda m: f"bottleneck.{'0' if m.group(1) == 'conv' else '1'}.", k)  # fmt: skip
        k = re.sub(r"^fuse_layer\.(conv|bn)\.", lambda m: f"fuse.{'0' if m.group(1) == 'conv' else '1'}.", k)  # conv1
        out[k] = v
    return out
