"""The benchmark device (the GPU when there is one) and a clock-safe wait for its queued work."""

from __future__ import annotations

import torch


def bench_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    """Wait for queued CUDA work, so a clock read after it measures the work (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
