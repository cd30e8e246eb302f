"""Name → constructor registries for encoders and decode heads (timm's `register_model` discipline).

An encoder is registered once under its public name and built by `create_backbone(name, **kwargs)`; the
segmentor factory never branches on a family. The contract every registered encoder keeps:

* `channels: list[int]` and `strides: list[int]` — one entry per returned feature map, finest first;
* `forward(x) -> list[Tensor]` on normalised images (the segmentor owns input normalisation);
* `load_pretrained(path) -> int` — strict loading from a local file (error naming the file otherwise);
* `set_grad_checkpointing(enable=True)` — activation checkpointing (memory for compute);
* optional `input_normalization` (`imagenet` | `caffe_bgr`) and `align_corners` defaults for its family.

A head is `create_head(name, in_channels, num_classes, **kwargs)` and returns `(logits, feat)` or
`(logits, feat, aux_logits)`; it has a `feat_dim` attribute (the size of the centroid feature).

Look-ups (timm's `list_models` / `is_model` style): `list_backbones()`, `list_heads()`, `is_backbone(name)`,
`is_head(name)`, `get_backbone(name)` and `get_head(name)` (the registered constructor). The tables themselves are
private to this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

F = TypeVar("F", bound=Callable[..., nn.Module])

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_HEADS: dict[str, Callable[..., nn.Module]] = {}
_WEIGHTS_FILES: dict[str, str] = {}  # backbone name: the file name its publishers give its pretrained weights


def _register(table: dict[str, Callable[..., nn.Module]], kind: str, name: str) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered (by {table[name].__module__})")
        table[name] = fn
        return fn

    return wrap


def register_backbone(name: str, weights_file: str | None = None) -> Callable[[F], F]:
    """Decorator: `@register_backbone("mit_b5", weights_file="mit_b5.pth")` on a function (or class) that builds
    the encoder; `weights_file` is the published name of its pretrained weights (see `standard_weights_file`)."""
    if weights_file is not None:
        _WEIGHTS_FILES[name] = weights_file
    return _register(_BACKBONES, "backbone", name)


def standard_weights_file(backbone: str | Mapping[str, Any]) -> str:
    """The file name an experiment looks for in `paths.pretrained_dir` for this encoder's pretrained weights.

    Experiments name the weights through the model (`${diga.weights_file:${model.backbone}}`: the backbone spec,
    `{name: …, …}` or a bare name), so that `experiment=gta2cs model=dinov2_vit_l` looks for DINOv2's file, not the
    default model's."""
    _ensure_builtin()
    name = str(backbone.get("name")) if isinstance(backbone, Mapping) else str(backbone)
    if name not in _WEIGHTS_FILES:
        known = ", ".join(f"{k}: {v}" for k, v in sorted(_WEIGHTS_FILES.items()))
        raise ValueError(f"backbone {name!r} has no standard pretrained-weights file; set model.pretrained=<a local "
                         f"file> (or null for random initialisation). Standard files: {known}")  # fmt: skip
    return _WEIGHTS_FILES[name]


def register_head(name: str) -> Callable[[F], F]:
    """Decorator: `@register_head("daformer")` on a head class or builder."""
    return _register(_HEADS, "head", name)


def _ensure_builtin() -> None:
    # importing the packages runs their @register_* decorators
    import diga.models.backbones
    import diga.models.heads  # noqa: F401


def list_backbones() -> list[str]:
    """The registered encoder names, sorted."""
    _ensure_builtin()
    return sorted(_BACKBONES)


def list_heads() -> list[str]:
    """The registered decode-head names, sorted."""
    _ensure_builtin()
    return sorted(_HEADS)


def is_backbone(name: str) -> bool:
    _ensure_builtin()
    return name in _BACKBONES


def is_head(name: str) -> bool:
    _ensure_builtin()
    return name in _HEADS


def get_backbone(name: str) -> Callable[..., nn.Module]:
    """The constructor registered under `name` (an error listing the registered names otherwise)."""
    _ensure_builtin()
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(sorted(_BACKBONES))}")
    return _BACKBONES[name]


def get_head(name: str) -> Callable[..., nn.Module]:
    """The constructor registered under `name` (an error listing the registered names otherwise)."""
    _ensure_builtin()
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; registered: {', '.join(sorted(_HEADS))}")
    return _HEADS[name]


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    return get_backbone(name)(**kwargs)


def create_head(name: str, in_channels: list[int], num_classes: int, **kwargs: Any) -> nn.Module:
    return get_head(name)(in_channels, num_classes, **kwargs)
