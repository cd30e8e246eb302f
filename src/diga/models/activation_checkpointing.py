"""Activation checkpointing that leaves BatchNorm running statistics as an uncheckpointed forward would.

`torch.utils.checkpoint` recomputes a block's forward during the backward pass. A BatchNorm layer in train mode
would then update its running mean/variance twice per step (an effective momentum of 0.19 instead of 0.1), which
changes the statistics an evaluation uses. The recomputation here runs with those updates switched off, so a run
with checkpointing keeps the same running statistics as one without (tested).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Inside: train-mode BatchNorm layers normalise with batch statistics but do not update running ones."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training:
            saved.append((m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def checkpointed(module: nn.Module, *args: Any) -> Any:
    """`module(*args)` with activations recomputed in the backward pass (non-reentrant torch checkpoint)."""
    if not torch.is_grad_enabled():
        return module(*args)
    return checkpoint(
        module,
        *args,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), frozen_batchnorm_statistics(module)),
    )
