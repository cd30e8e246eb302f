"""The authors' released DAFormer, HRDA and MIC checkpoints, loaded whole: encoder, decode head and HRDA's
scale-attention head.

They are mmseg training checkpoints: `{"state_dict": …}` with the student under `model.` (what the authors evaluate),
the EMA teacher under `ema_model.` and the frozen ImageNet encoder under `imnet_model.` — or a plain segmentor
(`backbone.…`, `decode_head.…`). HRDA nests its decode head (`decode_head.head.…`) beside the attention
(`decode_head.scale_attention.…`, DAFormer's head with a 1×1 fusion). The file carries no architecture: build the
segmentor from the matching model config (e.g. the `gta2cs_mic_hrda` experiment's), then `load_released` fills
every tensor or names what does not fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from diga.models.hrda import HRDASegmentor
from diga.models.segmentor import Segmentor
from diga.models.weights import (
    WeightFileError,
    daformer_head_from_mmseg,
    load_into,
    mit_to_timm_features,
    read_state_dict,
    strip_prefix,
)

PREFIXES = {"student": "model.", "teacher": "ema_model."}


def segmentor_part(sd: Mapping[str, torch.Tensor], which: str = "student") -> dict[str, torch.Tensor]:
    """The keys of one segmentor of a UDA checkpoint (`backbone.…`, `decode_head.…`), or the file itself when it
    holds a single segmentor."""
    if which not in PREFIXES:
        raise ValueError(f"which must be one of {sorted(PREFIXES)}, got {which!r}")
    prefix = PREFIXES[which]
    if any(k.startswith(f"{prefix}backbone.") for k in sd):
        return strip_prefix(sd, prefix)
    return dict(sd)


def is_released_mmseg(sd: Mapping[str, torch.Tensor]) -> bool:
    """An mmseg segmentor or UDA checkpoint (a backbone and a decode head, possibly under `model.`)."""
    part = segmentor_part(sd)
    return any(k.startswith("backbone.") for k in part) and any(k.startswith("decode_head.") for k in part)


def load_released(model: Segmentor, path: str | Path, which: str = "student",
                  state: Mapping[str, torch.Tensor] | None = None) -> int:  # fmt: skip
    """Fill `model` (MiT encoder + DAFormer head, with or without HRDA) from an authors' checkpoint; the number of
    tensors loaded. `which`: the student (`model.`, what the authors report) or the EMA teacher (`ema_model.`).
    `state`: the file's tensors when the caller has read them already (`path` then names it in errors)."""
    sd = read_state_dict(path) if state is None else state
    if not is_released_mmseg(sd):
        raise WeightFileError(f"{path}: not an mmseg DAFormer/HRDA/MIC checkpoint (no backbone. and decode_head. "
                              f"keys, e.g. {list(sd)[:3]})")  # fmt: skip
    part = segmentor_part(sd, which)
    if not hasattr(model.backbone, "body"):
        raise WeightFileError(f"{path}: the authors' models use a MiT encoder; this model's is "
                              f"{type(model.backbone).__name__}")  # fmt: skip
    try:
        encoder = mit_to_timm_features(strip_prefix(part, "backbone."))
    except Exception as e:
        raise WeightFileError(f"{path}: the encoder is not a MiT ({type(e).__name__}: {e})") from e
    head = strip_prefix(part, "decode_head.")
    loaded = load_into(model.backbone.body, encoder, path, "MiT encoder")
    if isinstance(model, HRDASegmentor):
        if not any(k.startswith("scale_attention.") for k in head):
            raise WeightFileError(f"{path}: an HRDA model needs decode_head.scale_attention.* (a DAFormer/MIC file "
                                  "without HRDA? build the model without model.hrda)")  # fmt: skip
        loaded += load_into(model.head, daformer_head_from_mmseg(strip_prefix(head, "head.")), path, "decode head")
        attention = daformer_head_from_mmseg(strip_prefix(head, "scale_attention."))
        return loaded + load_into(model.attention, attention, path, "scale-attention head")
    if any(k.startswith("scale_attention.") for k in head):
        raise WeightFileError(f"{path}: an HRDA checkpoint (decode_head.scale_attention.*): build the model with "
                              "model.hrda (e.g. experiment=gta2cs_mic_hrda)")  # fmt: skip
    return loaded + load_into(model.head, daformer_head_from_mmseg(head), path, "decode head")
