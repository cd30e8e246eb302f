"""`build_segmentor`: a registered encoder + a registered head + input normalisation = one `Segmentor`.

Configs in conf/model/ call it with the encoder's and the head's names and options; no family is special-cased
here — each encoder says its channels, strides and defaults (see `diga.models.registry`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diga.models.registry import create_backbone, create_head
from diga.models.segmentor import Segmentor


def _spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """`"mit_b5"` or `{name: mit_b5, drop_path_rate: 0.1}` → (name, options)."""
    if isinstance(spec, str):
        return spec, {}
    opts = dict(spec)
    if "name" not in opts:
        raise ValueError(f"a backbone/head spec needs a 'name', got {sorted(opts)}")
    return str(opts.pop("name")), opts


def _encoder(backbone: str | Mapping[str, Any], options: Mapping[str, Any], pretrained: str | Path | None) -> nn.Module:
    from diga.models.registry import _BACKBONES, _ensure_builtin

    _ensure_builtin()
    name, opts = _spec(backbone)
    if name in _BACKBONES:
        opts = {**_accepted(_BACKBONES[name], options, BACKBONE_OPTIONS), **opts}
    return create_backbone(name, pretrained=pretrained, **opts)


def min_input_side(model_cfg: Mapping[str, Any]) -> int:
    """The smallest image side the configured encoder takes (its coarsest stride), found without building weights:
    the encoder is constructed on the meta device, so this costs milliseconds even for ViT-g."""
    options = {k: v for k, v in model_cfg.items() if k in BACKBONE_OPTIONS}
    with torch.device("meta"):
        enc = _encoder(model_cfg.get("backbone", "mit_b5"), options, pretrained=None)
    return int(getattr(enc, "min_input_side", max(enc.strides)))


# flat options of the model configs and the side they configure
HEAD_OPTIONS = ("embed_dim", "dropout", "feat_after_dropout", "key_channels")
BACKBONE_OPTIONS = ("drop_path_rate", "pad_to_patch", "output_stride", "out_indices", "model_name", "layer_norm_eps")


def _accepted(fn: Any, kwargs: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The options among `names` that `fn` takes (all of them when it takes **kwargs)."""
    params = inspect.signature(fn).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in kwargs.items() if k in names and (open_ended or k in params)}


def build_segmentor(
    backbone: str | Mapping[str, Any] = "mit_b5",
    head: str | Mapping[str, Any] = "segformer",
    num_classes: int = 19,
    pretrained: str | Path | None = None,
    weights: str | Path | None = None,
    normalization: str | None = None,
    align_corners: bool | None = None,
    grad_checkpointing: bool = False,
    **options: Any,
) -> Segmentor:
    """Build a segmentor.

    Args:
        backbone: a registered encoder name or `{name: …, **encoder options}` (`diga.models.registry`).
        head: a registered head name or `{name: …, **head options}` (e.g. `embed_dim`, `dropout`).
        pretrained: ImageNet encoder weights (a local file; an error names it when it does not fit).
        weights: a whole-model checkpoint of diga (takes precedence over `pretrained`).
        normalization / align_corners: default to the encoder family's (`input_normalization`, `align_corners`).
        grad_checkpointing: recompute encoder activations in the backward pass (memory for time).
        options: flat options of older configs (`embed_dim`, `dropout`, `drop_path_rate`, `feat_after_dropout`),
            routed to the encoder or the head that takes them.
    """
    from diga.models.registry import _HEADS, _ensure_builtin

    _ensure_builtin()
    unknown = set(options) - set(HEAD_OPTIONS) - set(BACKBONE_OPTIONS)
    if unknown:
        raise ValueError(f"unknown model options {sorted(unknown)}: encoder options go in backbone: {{name: …}}, "
                         "head options in head: {name: …}")  # fmt: skip
    head_name, head_opts = _spec(head)
    enc = _encoder(backbone, options, pretrained=None if weights else pretrained)
    if grad_checkpointing:
        enc.set_grad_checkpointing(True)
    if head_name in _HEADS:
        head_opts = {**_accepted(_HEADS[head_name], options, HEAD_OPTIONS), **head_opts}
    if head_opts.get("embed_dim") is None:
        head_opts["embed_dim"] = getattr(enc, "default_head_width", {}).get(head_name, 256)
    dec = create_head(head_name, list(enc.channels), num_classes, **head_opts)
    model = Segmentor(
        enc,
        dec,
        num_classes,
        normalization=normalization or getattr(enc, "input_normalization", "imagenet"),
        align_corners=bool(getattr(enc, "align_corners", False) if align_corners is None else align_corners),
    )
    if weights:
        model.load_weights(weights)
    elif pretrained:
        load_pretrained_head(model, pretrained)
    return model


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
