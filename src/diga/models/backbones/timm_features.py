"""Any timm model with `features_only` support (ConvNeXt, ResNet, RegNet, EfficientNet, …) as a diga encoder.

One YAML adds a CNN: `backbone: timm`, `model_name: convnext_tiny`, optionally `out_indices`, `pretrained`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from diga.models.registry import register_backbone
from diga.models.segmentor import IMAGENET_MEAN, IMAGENET_STD
from diga.models.weights import WeightFileError, load_into, read_state_dict, strip_prefix


@register_backbone("timm")
class TimmFeatures(nn.Module):
    """Multi-level features of a timm model, finest first; `channels`/`strides` come from its `feature_info`.

    Args:
        model_name: any timm model name that supports `features_only=True`.
        out_indices: feature levels to return; an int n means the last n (default 4: strides 4…32 for most CNNs,
            where e.g. ResNet's stride-2 stem level is skipped).
        pretrained: local weight file (timm layout of the full or the features-only model, the architecture's
            original layout that timm's own `checkpoint_filter_fn` converts, or an mmseg `backbone.`-prefixed file).
        drop_path_rate: stochastic depth, passed only when given; a model that does not take it gets a warning.
        **timm_kwargs: passed to `timm.create_model` (e.g. `output_stride=16`).
    """

    input_normalization = "imagenet"
    align_corners = False

    def __init__(
        self,
        model_name: str,
        out_indices: int | Sequence[int] = 4,
        pretrained: str | Path | None = None,
        drop_path_rate: float | None = None,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        if not timm.is_model(model_name):
            raise ValueError(f"unknown timm model {model_name!r}")
        self.model_name = model_name
        kwargs = dict(timm_kwargs)
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        oi = out_indices if isinstance(out_indices, int) else tuple(out_indices)
        try:
            self.body = timm.create_model(model_name, pretrained=False, features_only=True, out_indices=oi, **kwargs)
        except TypeError as e:
            if "drop_path_rate" not in str(e):
                raise
            warnings.warn(f"{model_name} does not take drop_path_rate; built without it", stacklevel=2)
            kwargs.pop("drop_path_rate")
            self.body = timm.create_model(model_name, pretrained=False, features_only=True, out_indices=oi, **kwargs)
        self._full_kwargs = kwargs  # to rebuild the full model for its checkpoint filter (see load_pretrained)
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        if not (_close(mean, IMAGENET_MEAN) and _close(std, IMAGENET_STD)):
            warnings.warn(
                f"{model_name}'s timm weights expect mean {mean}, std {std}; diga feeds ImageNet-normalised images",
                stacklevel=2,
            )
        if pretrained:
            self.load_pretrained(pretrained)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        fn = getattr(self.body, "set_grad_checkpointing", None)
        if fn is None:
            raise NotImplementedError(f"timm's features wrapper for {self.model_name} has no grad checkpointing")
        fn(enable)

    def load_pretrained(self, path: str | Path) -> int:
        """Strict load; returns the number of tensors loaded.

        The features-only wrapper renames modules (`stages.0` → `stages_0`), so file keys are matched with `_` and
        `.` treated alike (shapes still checked). If that leaves tensors unset, the architecture's own timm
        `checkpoint_filter_fn` (original → timm names) is applied on a full model and the match retried.
        """
        sd = read_state_dict(path)
        for prefix in ("backbone.", "body."):  # mmseg files; a saved diga TimmFeatures / segmentor backbone
            if any(k.startswith(prefix) for k in sd):
                sd = strip_prefix(sd, prefix)
        what = f"{self.model_name} encoder"
        mapped = _match_names(self.body.state_dict(), sd)
        if len(mapped) < len(self.body.state_dict()):
            filt = getattr(
                sys.modules[timm.models.model_entrypoint(self.model_name).__module__], "checkpoint_filter_fn", None
            )
            if filt is not None:
                full = timm.create_model(self.model_name, pretrained=False, **self._full_kwargs)
                try:
                    converted = filt(dict(sd), full)
                except Exception as e:  # the filter assumes its own layout; anything else is not this model's file
                    raise WeightFileError(
                        f"{path}: not a {self.model_name} checkpoint ({type(e).__name__}: {e})"
                    ) from e
                retry = _match_names(self.body.state_dict(), converted)
                if len(retry) > len(mapped):
                    mapped = retry
        if not mapped:  # let load_into word the error with the file's keys
            mapped = dict(sd)
        return load_into(self.body, mapped, path, what)


def _canon(name: str) -> str:
    return name.replace("_", ".")


def _match_names(own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """File tensors renamed to `own`'s keys: exact name, else the same name up to `_`/`.` (and a `model.` prefix,
    timm's getter wrapper). Ambiguous canonical names are not used."""
    by_canon: dict[str, str | None] = {}
    for k in sd:
        c = _canon(k)
        by_canon[c] = None if c in by_canon else k
    out = {}
    for k in own:
        if k in sd:
            out[k] = sd[k]
            continue
        for cand in (k, k[len("model.") :] if k.startswith("model.") else None):
            src = by_canon.get(_canon(cand)) if cand else None
            if src is not None:
                out[k] = sd[src]
                break
    return out


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-3 for x, y in zip(a, b))
