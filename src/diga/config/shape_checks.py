"""Reject image sizes the model cannot take, before anything is built.

An encoder with a coarsest stride of 32 cannot take a 16-pixel crop, and an image that is large enough at scale
1.0 can be too small at the 0.5 scale of two-scale inference. Both are known from the config alone (the encoder is
sized on the meta device); per-file sizes are left to `python -m diga.check_data`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig

from diga.utils.hydra import select_plain


def model_config(cfg: DictConfig) -> Mapping[str, Any] | None:
    """The segmentor's config of a stage (or of an evaluation), None for stages without one (the translator)."""
    model = select_plain(cfg, "stage.module.model") or select_plain(cfg, "model")
    return model if isinstance(model, Mapping) and "backbone" in model else None


def _sides(size: Any) -> list[int]:
    if size is None:
        return []
    return [int(size)] * 2 if isinstance(size, (int, float)) else [int(s) for s in size]


def inference_min_side(min_side: int, inference: Mapping[str, Any] | None) -> tuple[int, str]:
    """(the smallest image side that stays ≥ `min_side` at every inference scale, the scales as text)."""
    scales: Sequence[float] = (inference or {}).get("scales") or [1.0]
    return math.ceil(min_side / min(scales)), ", ".join(str(s) for s in scales)


def shape_problems(cfg: DictConfig) -> list[str]:
    """One line per configured size below the model's minimum, naming the key and the minimum."""
    model = model_config(cfg)
    if model is None:
        return []
    from diga.models.factory import min_input_side

    try:
        min_side = min_input_side(model)
    except Exception:  # an encoder that cannot be sized without weights: the build will report it
        return []
    stride = f"the encoder's coarsest stride is {min_side}"
    problems = []
    task = select_plain(cfg, "stage.task") or "fit"
    if task == "fit":
        crop = _sides(select_plain(cfg, "datamodule.crop_size"))
        if crop and min(crop) < min_side:
            problems.append(f"datamodule.crop_size={crop}: both sides must be at least {min_side} ({stride})")
        window = _sides((model.get("hrda") or {}).get("hr_crop_size"))
        if crop and window and (window[0] > crop[0] or window[1] > crop[1]):
            problems.append(f"model.hrda.hr_crop_size={window}: the detail window must fit in datamodule.crop_size="
                            f"{crop}")  # fmt: skip
        context = (model.get("hrda") or {}).get("context_scale")
        if crop and context and min(crop) * float(context) < min_side:
            problems.append(f"datamodule.crop_size={crop}: at model.hrda.context_scale={context} both sides must be "
                            f"at least {math.ceil(min_side / float(context))} ({stride})")  # fmt: skip
        inference = select_plain(cfg, "stage.module.inference")
        need, scales = inference_min_side(min_side, inference)
        for name in select_plain(cfg, "datamodule.val") or {}:
            size = _sides(select_plain(cfg, f"datamodule.val.{name}.loader.eval_resize"))
            if size and min(size) < need:
                problems.append(f"datamodule.val.{name}.loader.eval_resize={size}: at inference scales {scales} both "
                                f"sides must be at least {need} ({stride})")  # fmt: skip
        window = _sides((inference or {}).get("crop_size")) if (inference or {}).get("mode") == "slide" else []
        if window and min(window) < min_side:
            problems.append(f"inference.crop_size={window}: the sliding window must be at least {min_side} ({stride})")
    elif task in ("pseudolabel", "centroids"):
        need, scales = inference_min_side(
            min_side, select_plain(cfg, "stage.inference") if task == "pseudolabel" else None
        )
        size = _sides(select_plain(cfg, "stage.resize"))
        if size and min(size) < need:
            problems.append(f"stage.resize={size}: at inference scales {scales} both sides must be at least {need} "
                            f"({stride})")  # fmt: skip
    return problems
