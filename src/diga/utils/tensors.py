"""Small tensor operations that run on the device without making the host wait for it."""

from __future__ import annotations

import torch


def count_values(index: torch.Tensor, size: int) -> torch.Tensor:
    """`torch.bincount(index, minlength=size)` for indices known to lie in [0, size): int64 counts of each value.

    `bincount` first reads the largest index back to the host to size its output — on a GPU a synchronisation at
    every call; with the size known, a scatter-add into `size` zeros gives the same counts without it.
    """
    flat = index.reshape(-1).long()
    return torch.zeros(size, dtype=torch.long, device=index.device).scatter_add_(0, flat, torch.ones_like(flat))
