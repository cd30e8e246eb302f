"""`python -m benchmarks.optimizer_step` — AdamW's step per implementation (single-tensor, foreach, fused) on CPU.

For MiT-B0 and MiT-B5 segmentors (all parameters, fixed random gradients): milliseconds per step, and how far the
parameters drift from the single-tensor result after 11 steps (the rounding difference the choice makes). Ratios are
measured in one run, so machine load affects all three alike.
"""

from __future__ import annotations

import argparse
import time

import torch

from diga.models.factory import build_segmentor

MODES = {"single-tensor": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def measure(backbone: str, steps: int = 10) -> dict[str, tuple[float, float]]:
    torch.manual_seed(0)
    params = [p.detach() for p in build_segmentor(backbone=backbone, head="segformer", num_classes=19).parameters()]
    grads = [torch.randn_like(p) * 1e-3 for p in params]
    out, reference = {}, None
    for mode, kwargs in MODES.items():
        ps = [p.clone().requires_grad_(True) for p in params]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt = torch.optim.AdamW(ps, lr=6e-5, weight_decay=0.01, **kwargs)
        opt.step()  # first step allocates the state
        t = time.perf_counter()
        for _ in range(steps):
            opt.step()
        ms = (time.perf_counter() - t) / steps * 1000
        reference = reference or ps
        drift = max((a - b).abs().max().item() for a, b in zip(ps, reference))
        out[mode] = (ms, drift)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="mit_b0,mit_b5")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for backbone in args.backbones.split(","):
        res = measure(backbone)
        base = res["single-tensor"][0]
        for mode, (ms, drift) in res.items():
            print(f"{backbone:8s} {mode:14s} {ms:8.1f} ms/step  {base / ms:4.2f}×  max |Δparam| {drift:.1e}")


if __name__ == "__main__":
    main()
