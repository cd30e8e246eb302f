"""Inference throughput and forward GFLOP/s as a fraction of this machine's measured matmul peak."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.device import bench_device, sync
from diga.models import build_segmentor


def matmul_peak_gflops(n: int = 2048, repeat: int = 5) -> float:
    """fp32 matmul throughput on the benchmark device (the yardstick for forward efficiency)."""
    a, b = torch.randn(n, n, device=bench_device()), torch.randn(n, n, device=bench_device())
    a @ b
    sync()
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync()
    return 2 * n**3 * repeat / (time.perf_counter() - t) / 1e9


def forward_stats(backbone: str, head: str, h: int, w: int, batch: int = 1, repeat: int = 3,
                  channels_last: bool = False) -> dict[str, float]:  # fmt: skip
    model = build_segmentor(backbone, head, num_classes=19).eval().to(bench_device())
    x = torch.rand(batch, 3, h, w, device=bench_device())
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(x)
        flops = counter.get_total_flops()
        model(x)
        sync()
        t = time.perf_counter()
        for _ in range(repeat):
            model(x)
        sync()
        dt = (time.perf_counter() - t) / repeat
    return {"gflop": flops / 1e9, "s_per_batch": dt, "img_per_s": batch / dt, "gflops": flops / dt / 1e9}
