"""`build_segmentor`: a registered encoder + a registered head + input normalisation = one `Segmentor`.

Configs in conf/model/ give each side as a spec, `backbone: {name: mit_b5, drop_path_rate: 0.1}` and
`head: {name: segformer, embed_dim: 768, dropout: 0.1}` (a bare name is a spec without options); the options go
unchanged to the registered constructor. No family is special-cased here — each encoder says its channels,
strides and defaults (see `diga.models.registry`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diga.models.registry import create_backbone, create_head, get_head
from diga.models.segmentor import Segmentor

# Deprecation shim: the flat model options of older configs and checkpoints (`model.embed_dim: 768` next to
# `model.backbone: mit_b5`) and the side each one configures. `build_segmentor` moves them into the nested spec of
# that side, with a FutureWarning; no new option is ever added here.
DEPRECATED_FLAT_OPTIONS: dict[str, str] = {
    "embed_dim": "head",
    "dropout": "head",
    "feat_after_dropout": "head",
    "key_channels": "head",
    "drop_path_rate": "backbone",
    "pad_to_patch": "backbone",
    "output_stride": "backbone",
    "out_indices": "backbone",
    "model_name": "backbone",
    "layer_norm_eps": "backbone",
}


def _spec(spec: str | Mapping[str, Any], side: str) -> dict[str, Any]:
    """`"mit_b5"` or `{name: mit_b5, drop_path_rate: 0.1}` → `{name: mit_b5, **options}` (a new dict)."""
    if isinstance(spec, str):
        return {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        got = sorted(spec) if isinstance(spec, Mapping) else repr(spec)
        raise ValueError(f"model.{side} must be a registered name or {{name: …, <{side} options>}}, got {got}")
    return {**spec, "name": str(spec["name"])}


def nested_specs(
    backbone: str | Mapping[str, Any], head: str | Mapping[str, Any], flat: Mapping[str, Any], warn: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The backbone and head specs, `{name: …, **options}`, with the deprecated flat options of `flat` moved in
    (`DEPRECATED_FLAT_OPTIONS`; one FutureWarning names them when `warn`)."""
    unknown = sorted(set(flat) - set(DEPRECATED_FLAT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown model options {unknown}: encoder options go in model.backbone: {{name: …, …}}, "
                         "head options in model.head: {name: …, …}")  # fmt: skip
    specs = {"backbone": _spec(backbone, "backbone"), "head": _spec(head, "head")}
    for key, value in flat.items():
        side = DEPRECATED_FLAT_OPTIONS[key]
        if specs[side].get(key) is not None and specs[side][key] != value:  # null in the spec = the default
            raise ValueError(f"model.{key}={value!r} (deprecated spelling) contradicts model.{side}.{key}="
                             f"{specs[side][key]!r}: keep only model.{side}.{key}")  # fmt: skip
        specs[side][key] = value
    if flat and warn:
        old = ", ".join(f"model.{k}" for k in flat)
        new = ", ".join(f"model.{DEPRECATED_FLAT_OPTIONS[k]}.{k}" for k in flat)
        warnings.warn(f"{old} {'is' if len(flat) == 1 else 'are'} deprecated: use {new}", FutureWarning, stacklevel=3)
    return specs["backbone"], specs["head"]


def _options(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "name"}


@contextmanager
def _option_errors(side: str, spec: Mapping[str, Any]) -> Iterator[None]:
    """A constructor that refuses an option (or misses one) fails with the config keys in the message."""
    try:
        yield
    except TypeError as e:
        if "keyword argument" not in str(e) and "required positional argument" not in str(e):
            raise
        given = ", ".join(f"model.{side}.{k}" for k in _options(spec)) or "none"
        raise TypeError(f"model.{side} {spec['name']!r}: {e} (options given: {given}); remove an option with "
                        f"~model.{side}.<option>, or give the name alone (model.{side}={spec['name']}) for its "
                        "defaults") from e  # fmt: skip


def _encoder(spec: Mapping[str, Any], pretrained: str | Path | None) -> nn.Module:
    with _option_errors("backbone", spec):
        return create_backbone(spec["name"], pretrained=pretrained, **_options(spec))


def min_input_side(model_cfg: Mapping[str, Any]) -> int:
    """The smallest image side the configured encoder takes (its coarsest stride), found without building weights:
    the encoder is constructed on the meta device, so this costs milliseconds even for ViT-g."""
    flat = {k: v for k, v in model_cfg.items() if k in DEPRECATED_FLAT_OPTIONS}
    backbone, _ = nested_specs(model_cfg.get("backbone", "mit_b5"), "segformer", flat, warn=False)
    with torch.device("meta"):
        enc = _encoder(backbone, pretrained=None)
    return int(getattr(enc, "min_input_side", max(enc.strides)))


def build_segmentor(
    backbone: str | Mapping[str, Any] = "mit_b5",
    head: str | Mapping[str, Any] = "segformer",
    num_classes: int = 19,
    pretrained: str | Path | None = None,
    weights: str | Path | None = None,
    normalization: str | None = None,
    align_corners: bool | None = None,
    grad_checkpointing: bool = False,
    hrda: Mapping[str, Any] | None = None,
    **deprecated_options: Any,
) -> Segmentor:
    """Build a segmentor.

    Args:
        backbone: a registered encoder name or `{name: …, **encoder options}` (`diga.models.registry`), e.g.
            `{name: mit_b5, drop_path_rate: 0.1}`; the options go to the encoder's constructor as they are.
        head: a registered head name or `{name: …, **head options}`, e.g. `{name: segformer, embed_dim: 768,
            dropout: 0.1}`; `embed_dim` null (or absent) takes the encoder's default width for that head.
        pretrained: ImageNet encoder weights (a local file; an error names it when it does not fit).
        weights: a whole-model checkpoint of diga, or an authors' DAFormer/HRDA/MIC checkpoint (its student;
            `diga.models.released`); takes precedence over `pretrained`.
        normalization / align_corners: default to the encoder family's (`input_normalization`, `align_corners`).
        grad_checkpointing: recompute encoder activations in the backward pass (memory for time).
        hrda: multi-resolution training and inference (`diga.models.hrda`), `{hr_crop_size: [512, 512],
            context_scale: 0.5, crop_divisible: 8, detail_loss_weight: 0.1, detail_slide: true, attention: {embed_dim:
            256}}` (the attention head: DAFormer's head with a 1×1 fusion); null = one resolution.
        deprecated_options: the flat options of older configs and checkpoints (`embed_dim`, `drop_path_rate`, …:
            `DEPRECATED_FLAT_OPTIONS`), moved into the spec of their side with a FutureWarning.
    """
    backbone_spec, head_spec = nested_specs(backbone, head, deprecated_options)
    get_head(head_spec["name"])  # an unknown head fails before a large encoder is built
    enc = _encoder(backbone_spec, pretrained=None if weights else pretrained)
    if grad_checkpointing:
        enc.set_grad_checkpointing(True)
    if head_spec.get("embed_dim") is None:
        head_spec["embed_dim"] = getattr(enc, "default_head_width", {}).get(head_spec["name"], 256)
    with _option_errors("head", head_spec):
        dec = create_head(head_spec["name"], list(enc.channels), num_classes, **_options(head_spec))
    norm = normalization or getattr(enc, "input_normalization", "imagenet")
    corners = bool(getattr(enc, "align_corners", False) if align_corners is None else align_corners)
    if hrda:
        model: Segmentor = _multi_resolution(enc, dec, num_classes, norm, corners, hrda)
    else:
        model = Segmentor(enc, dec, num_classes, normalization=norm, align_corners=corners)
    if weights:
        from diga.models.released import is_released_mmseg, load_released
        from diga.models.weights import read_state_dict

        state = read_state_dict(weights)  # read once: an authors' mmseg file or one of diga's own
        if is_released_mmseg(state):
            load_released(model, weights, state=state)
        else:
            model.load_weights(weights, state=state)
    elif pretrained:
        load_pretrained_head(model, pretrained)
    return model


def _multi_resolution(enc: nn.Module, dec: nn.Module, num_classes: int, normalization: str, align_corners: bool,
                      hrda: Mapping[str, Any]) -> Segmentor:  # fmt: skip
    """HRDA around the built encoder and head: the scale-attention head is DAFormer's with a 1×1 fusion."""
    from diga.models.hrda import HRDASegmentor

    options = dict(hrda)
    attention = {"embed_dim": 256, **dict(options.pop("attention", None) or {})}
    with _option_errors("hrda.attention", {"name": "daformer", **attention}):
        att = create_head("daformer", list(enc.channels), num_classes, fusion="conv", **attention)
    return HRDASegmentor(enc, dec, att, num_classes, normalization, align_corners, **options)


def load_pretrained_head(model: Segmentor, pretrained: str | Path) -> int:
    """A pretrained file that also holds a SegFormer decode head (a Hub `nvidia/segformer-*` model) fills the head
    too when it fits (same width and classes); a head for other classes is left initialised, and the log says so."""
    import logging

    from diga.models.heads.segformer import SegFormerHead
    from diga.models.hf_segformer import hf_head_to_diga, is_hf_segformer
    from diga.models.weights import load_into, read_state_dict

    sd = read_state_dict(pretrained)
    head = hf_head_to_diga(sd) if is_hf_segformer(sd) else {}
    if not head or not isinstance(model.head, SegFormerHead):
        return 0
    own = model.head.state_dict()
    if any(k in own and v.shape != own[k].shape for k, v in head.items()):
        classes, width = tuple(head["linear_pred.weight"].shape[:2]) if "linear_pred.weight" in head else ("?", "?")
        logging.getLogger(__name__).info(
            "%s: decode head not loaded: %s classes × width %s in the file, %d × %d in the model", pretrained,
            classes, width, model.num_classes, model.head.feat_dim)  # fmt: skip
        return 0
    return load_into(model.head, head, pretrained, "SegFormer decode head")
