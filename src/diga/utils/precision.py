"""Where low precision is allowed and where the method's maths must stay in float32.

Mixed precision (`trainer.precision=bf16-mixed | 16-mixed`) runs the training step inside `torch.autocast`, which
lowers every matrix product to bf16/fp16 — including the ones that are not network layers. Calling `.float()` on
the inputs does not help: autocast casts them back down at the next matmul. Two places of DiGA break under that:

* class centroids: per-class feature sums over thousands of pixels overflow fp16 (65 504) and lose their low bits
  in bf16 (8-bit mantissa);
* nearest-centroid distances ‖f‖² + ‖μ‖² − 2 f·μ: two large, nearly equal terms cancel, and in bf16 the difference
  is rounding noise — nearest-centroid labels flip.

`float32_math` runs such a function with autocast off and its floating tensor arguments in float32. The "true"
low-precision modes (`bf16-true`, `16-true`) store the weights themselves in 16 bits; `true_precision_problem`
says why diga refuses them for training.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

LOW_PRECISION_TRUE = ("bf16-true", "16-true", "transformer-engine", "transformer-engine-float16")


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


def _device_types(values: Any) -> set[str]:
    found: set[str] = set()
    for v in values:
        if isinstance(v, torch.Tensor):
            found.add(v.device.type)
        elif isinstance(v, (list, tuple)):
            found |= _device_types(v)
    return found


def float32_math(fn: F) -> F:
    """Run `fn` with autocast disabled on its tensors' devices and its floating tensor arguments in float32."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        devices = _device_types([*args, *kwargs.values()]) or {"cpu"}
        with _autocast_off(devices):
            return fn(*_to_float32(list(args)), **{k: _to_float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def _autocast_off(devices: set[str]) -> contextlib.ExitStack:
    """`torch.autocast(device, enabled=False)` for each of `devices` that autocast knows (meta has none)."""
    stack = contextlib.ExitStack()
    for d in sorted(devices & {"cpu", "cuda", "xpu", "mps"}):
        stack.enter_context(torch.autocast(d, enabled=False))
    return stack


def true_precision_problem(precision: Any) -> str | None:
    """Why a training stage cannot run in `precision`, or None.

    In a "true" 16-bit mode the weights, the optimiser's state, the EMA teacher and the class centroids are all
    stored in 16 bits. An update smaller than the weight's last bit is lost: with bf16's 8-bit mantissa a relative
    change below 2⁻⁸ ≈ 0.4 % disappears, so AdamW steps of lr 6e-5, the teacher's (1 − 0.999) share of the student
    and the centroids' momentum of 1e-4 mostly round away. The mixed modes keep all of that in float32.
    """
    p = str(precision)
    if p not in LOW_PRECISION_TRUE:
        return None
    mixed = "16-mixed" if p.startswith("16") or p.endswith("float16") else "bf16-mixed"
    return (
        f"trainer.precision={p} stores the weights, the EMA teacher and the class centroids in 16 bits, where updates "
        f"below 0.4 % of a value are lost (AdamW's steps, the teacher's 0.001 share, the centroids' 1e-4 momentum): "
        f"use trainer.precision={mixed} (16-bit compute, float32 weights and state)"
    )
