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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

F = TypeVar("F", bound=Callable[..., nn.Module])

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}
_HEADS: dict[str, Callable[..., nn.Module]] = {}


def _register(table: dict[str, Callable[..., nn.Module]], kind: str, name: str) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered (by {table[name].__module__})")
        table[name] = fn
        return fn

    return wrap


def register_backbone(name: str) -> Callable[[F], F]:
    """Decorator: `@register_backbone("mit_b5")` on a function (or class) that builds the encoder."""
    return _register(_BACKBONES, "backbone", name)


def register_head(name: str) -> Callable[[F], F]:
    """Decorator: `@register_head("daformer")` on a head class or builder."""
    return _register(_HEADS, "head", name)


def _ensure_builtin() -> None:
    # importing the packages runs their @register_* decorators
    import diga.models.backbones
    import diga.models.heads  # noqa: F401


def list_backbones() -> list[str]:
    _ensure_builtin()
    return sorted(_BACKBONES)


def list_heads() -> list[str]:
    _ensure_builtin()
    return sorted(_HEADS)


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    _ensure_builtin()
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(sorted(_BACKBONES))}")
    return _BACKBONES[name](**kwargs)


def create_head(name: str, in_channels: list[int], num_classes: int, **kwargs: Any) -> nn.Module:
    _ensure_builtin()
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; registered: {', '.join(sorted(_HEADS))}")
    return _HEADS[name](in_channels, num_classes, **kwargs)
