"""The CPU all-reduce BatchNorm equals BatchNorm over the global batch (forward, backward, running stats)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from diga.models.sync_batchnorm import AllReduceSyncBatchNorm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference(x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    bn = nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(w)
    x = x.clone().requires_grad_(True)
    y = bn(x)
    (y * torch.arange(y.numel()).reshape(y.shape).sin()).sum().backward()
    return {"y": y.detach(), "gx": x.grad, "gw": bn.weight.grad, "gb": bn.bias.grad,
            "rm": bn.running_mean, "rv": bn.running_var}  # fmt: skip


def _worker(rank: int, port: int, x: torch.Tensor, w: torch.Tensor, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = AllReduceSyncBatchNorm().apply(nn.Sequential(nn.BatchNorm2d(3, momentum=0.3)))
    bn = model[0]
    with torch.no_grad():
        bn.weight.copy_(w)
    lo, hi = (0, 3) if rank == 0 else (3, 5)  # uneven split: 3 + 2 images
    xr = x[lo:hi].clone().requires_grad_(True)
    y = bn(xr)
    (y * torch.arange(x.numel()).reshape(x.shape).sin()[lo:hi]).sum().backward()
    # parameter gradients are per-rank partial sums; DDP would all-reduce them
    gw, gb = bn.weight.grad.clone(), bn.bias.grad.clone()
    dist.all_reduce(gw)
    dist.all_reduce(gb)
    reverted = type(AllReduceSyncBatchNorm().revert(model)[0]).__name__
    result = {"y": y.detach(), "gx": xr.grad, "gw": gw, "gb": gb, "rm": bn.running_mean, "rv": bn.running_var}
    torch.save({**result, "cls": reverted}, Path(out) / f"r{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.ddp
def test_all_reduce_batchnorm_equals_global_batchnorm(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3, 4, 6) * 3 + 1
    w = torch.rand(3) + 0.5
    ref = _reference(x, w)
    mp.spawn(_worker, args=(_free_port(), x, w, str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in (0, 1))
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), ref["y"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r0["gx"], r1["gx"]]), ref["gx"], rtol=1e-4, atol=1e-5)
    for k in ("gw", "gb", "rm", "rv"):
        torch.testing.assert_close(r0[k], ref[k], rtol=1e-5, atol=1e-5, msg=k)
        torch.testing.assert_close(r1[k], ref[k], rtol=1e-5, atol=1e-5, msg=k)
    assert r0["cls"] == "BatchNorm2d"  # revert restores the original class
