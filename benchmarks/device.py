"""The benchmark device (the GPU when there is one) and a clock-safe wait for its queued work."""

from __future__ import annotations

import os

import torch


def bench_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sync() -> None:
    """Wait for queued CUDA work, so a clock read after it measures the work (no-op on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def machine() -> dict:
    """What a result was measured on: CPU model, its vector extensions and the ISA ATen dispatches to, the GPUs.

    Two 2-core machines of the same size can differ by 3× in fp32 speed and in whether bf16 has hardware support
    (AVX2 against AVX-512 with AMX), so every result file carries this beside its figures."""
    from diga.utils.environment import cpu_isa_flags, cpu_model, torch_build

    build = torch_build()  # what every run's environment record says of torch and the GPUs
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_isa_flags": cpu_isa_flags(),
            "cpu_capability": build["cpu_capability"], "gpus": build["gpus"], "torch": build["torch"]}  # fmt: skip


def machine_line(m: dict) -> str:
    """One line for a table's caption, e.g. `Intel(R) Xeon(R) Processor × 2, ATen AVX512, amx_bf16 avx512_bf16`."""
    bf16 = [f for f in m.get("cpu_isa_flags", []) if "bf16" in f] or ["no bf16 instructions"]
    gpus = f", GPU {', '.join(m['gpus'])}" if m.get("gpus") else ""
    return f"{m['cpu']} × {m['cpu_count']}, ATen {m['cpu_capability']}, {' '.join(bf16)}{gpus}"
