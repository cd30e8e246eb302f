"""The supervised segmentation loss named by a config block (conf/loss/): `{kind: ce|ohem, …}` → a callable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch

from diga.losses.segmentation import cross_entropy, ohem_cross_entropy

SegLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_seg_loss(cfg: Mapping[str, Any] | None) -> SegLoss:
    """`{kind: ce, normalization: all_pixels|valid}` or `{kind: ohem, thresh, min_kept}`."""
    opts = dict(cfg or {"kind": "ce", "normalization": "all_pixels"})
    kind = opts.pop("kind", "ce")
    if kind == "ce":
        return partial(cross_entropy, normalization=opts.get("normalization", "all_pixels"))
    if kind == "ohem":
        return partial(ohem_cross_entropy, thresh=float(opts.get("thresh", 0.7)),
                       min_kept=int(opts.get("min_kept", 100_000)))  # fmt: skip
    raise ValueError(f"unknown segmentation loss kind {kind!r} (ce | ohem)")
