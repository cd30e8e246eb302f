"""Synchronised BatchNorm for any process-group backend (CPU/gloo included).

`torch.nn.SyncBatchNorm` only runs on CUDA/XPU tensors, so a CPU DDP run (`trainer=ddp trainer.accelerator=cpu`,
what the test suite uses) would otherwise normalise with per-rank statistics and train a different model than one
process with the same global batch. This layer sums the batch statistics over the group with differentiable
all-reduces (two passes: mean, then centred second moment — no E[x²]−E[x]² cancellation), so forward and backward
equal BatchNorm over the global batch. Written by hand because torch and Lightning offer no CPU variant; on GPUs
Lightning's `TorchSyncBatchNorm` (NCCL kernels) is used instead.
"""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_fn
from pytorch_lightning.plugins.layer_sync import LayerSync
from torch import nn

from diga.utils.distributed import rank_and_world


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the union of every rank's batch while training; plain BatchNorm otherwise."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or rank_and_world()[1] == 1:
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = (1, c) + (1,) * (x.dim() - 2)
        count = x.new_tensor([x.numel() // c], dtype=torch.float64)
        total = dist_fn.all_reduce(torch.cat([x.sum(dims).double(), count]))
        n = total[-1]
        mean = (total[:c] / n).to(x.dtype)
        centred = x - mean.view(shape)
        var = (dist_fn.all_reduce((centred * centred).sum(dims).double()) / n).to(x.dtype)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)).to(x.dtype), alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _swap(module: nn.Module, to_sync: bool) -> nn.Module:
    """Replace BatchNorm layers in place of their class (state and parameters are shared, not copied)."""
    if (
        to_sync
        and isinstance(module, nn.modules.batchnorm._BatchNorm)
        and not isinstance(module, (AllReduceBatchNorm, nn.SyncBatchNorm))
    ):
        module._diga_original_class = type(module)  # type: ignore[attr-defined]
        module.__class__ = AllReduceBatchNorm
    elif not to_sync and isinstance(module, AllReduceBatchNorm):
        module.__class__ = getattr(module, "_diga_original_class", nn.BatchNorm2d)
    for child in module.children():
        _swap(child, to_sync)
    return module


class AllReduceSyncBatchNorm(LayerSync):
    """Lightning layer-sync plugin: `trainer.sync_batchnorm=true` on CPU maps to this."""

    def apply(self, model: nn.Module) -> nn.Module:
        return _swap(model, True)

    def revert(self, model: nn.Module) -> nn.Module:
        return _swap(model, False)
