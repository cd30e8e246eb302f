"""Optimizer and learning-rate schedule from plain config dicts (kept out of hparams as objects)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate

GroupSpec = list[torch.nn.Parameter] | list[dict[str, Any]]


def build_optimizer(cfg: Mapping[str, Any], groups: Mapping[str, GroupSpec]) -> torch.optim.Optimizer:
    """`cfg` = {`_target_`: torch.optim.X, lr, …, lr_mult: {group: factor}}; each named group gets lr · factor.

    A group is a list of parameters, or a list of sub-groups `{params, lr_scale, [weight_decay], name}` (layer-wise
    learning-rate decay: lr · factor · lr_scale). `layer_decay` in `cfg` is read by the caller, not passed on.
    Parameters are de-duplicated across groups (the reference lists backbone weights up to 4× — each would then be
    updated several times per step).
    """
    cfg = dict(cfg)
    lr_mult = dict(cfg.pop("lr_mult", None) or {})
    cfg.pop("layer_decay", None)
    base_lr = float(cfg["lr"])
    seen: set[int] = set()
    param_groups = []
    for name, spec in groups.items():
        subgroups = spec if spec and isinstance(spec[0], dict) else [{"params": spec, "name": name}]
        for g in subgroups:
            unique = [p for p in g["params"] if id(p) not in seen and not seen.add(id(p))]  # type: ignore[func-returns-value]
            if not unique:
                continue
            lr = base_lr * float(lr_mult.get(name, 1.0)) * float(g.get("lr_scale", 1.0))
            param_groups.append({**g, "params": unique, "lr": lr, "name": g.get("name", name)})
    return instantiate(cfg, params=param_groups, _convert_="all")


def poly_lambda(max_steps: int, power: float = 0.9, warmup_steps: int = 0, warmup_ratio: float = 1e-6):
    """LR factor at step i: linear warm-up from `warmup_ratio`, then `(1 − i/N)^power` (mmseg poly, by iteration)."""

    def factor(step: int) -> float:
        poly = max(1.0 - step / max(max_steps, 1), 0.0) ** power
        if step < warmup_steps:
            k = warmup_ratio + (1 - warmup_ratio) * step / warmup_steps
            return poly * k
        return poly

    return factor
