"""Which device a configured run trains on, decided once for every place that needs to know before the trainer does."""

from __future__ import annotations

from typing import Any


def trains_on_cuda(accelerator: Any) -> bool:
    """`trainer.accelerator` asks for CUDA: `gpu` or `cuda`, or `auto` on a machine where torch sees a GPU."""
    import torch

    name = str(accelerator)
    return name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available())
