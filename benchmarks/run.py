"""`make bench` / `python -m benchmarks.run [--quick]` — every number here is measured in this one run.

Reports: vectorised method ops vs naive loops (speed-up), training-step throughput of each stage at the toy size and
the speed options (bf16 autocast, channels-last, torch.compile) relative to fp32, inference img/s and forward GFLOP/s
as a fraction of the measured matmul peak. Results go to `benchmarks/results/<host>-<date>.json` and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import torch

from benchmarks import forward, ops, train_step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip MiT-B5 at 512×1024 and torch.compile")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    out: dict[str, object] = {"host": platform.node(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                              "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip

    print("== vectorised ops vs reference-style loops ==")
    out["ops"] = ops.run()
    for r in out["ops"]:
        print(f"{r['op']:<55} {r['vectorised_ms']:8.2f} ms  vs {r['loop_ms']:8.2f} ms  → {r['speedup']:6.1f}×")

    print("\n== training step at toy size (SegFormer-B0, 64×128 crops, batch 8) ==")
    work = Path(tempfile.mkdtemp(prefix="diga-bench-"))
    variants = {"fp32": [], "bf16-mixed": ["trainer.precision=bf16-mixed"], "channels-last": ["channels_last=true"]}
    if not args.quick:
        variants["torch.compile"] = ["compile_model=true"]
    train_rows = []
    for stage in ("source_only", "warmup"):
        extra = ["translator.kind=fourier"] if stage == "warmup" else []
        for name, ov in variants.items():
            if stage == "warmup" and name != "fp32":
                continue
            r = train_step.measure(stage, [*extra, *ov], work / f"{stage}-{name}", args.steps, 5, batch=8)
            train_rows.append({"stage": stage, "variant": name, **r})
            print(f"{stage:<12} {name:<14} {r['img_per_s']:7.1f} img/s  ({1000 * r['s_per_step']:.0f} ms/step)")
    base = {r["stage"]: r["img_per_s"] for r in train_rows if r["variant"] == "fp32"}
    for r in train_rows:
        r["vs_fp32"] = r["img_per_s"] / base[r["stage"]]
    out["train"] = train_rows

    print("\n== pseudo-label generation (toy, 2 scales, one image at a time, streamed to disk) ==")
    model = work / "source_only-fp32" / "source_only" / "final_model.pt"
    out["pseudolabel"] = train_step.measure_pseudolabels(model, work / "pl", images=64)
    r = out["pseudolabel"]
    print(f"{r['img_per_s']:.1f} img/s over {r['images']} images, process max RSS {r['max_rss_gb']:.2f} GB")

    print("\n== inference / forward efficiency ==")
    peak = forward.matmul_peak_gflops()
    out["matmul_peak_gflops"] = peak
    print(f"matmul peak (fp32, 2048²): {peak:.1f} GFLOP/s")
    cases = [("mit_b0", "segformer", 80, 160, 8)]
    if not args.quick:
        cases.append(("mit_b5", "segformer", 512, 1024, 1))
    fwd = []
    for bb, head, h, w, bs in cases:
        r = forward.forward_stats(bb, head, h, w, batch=bs, repeat=2 if bb == "mit_b5" else 5)
        r.update(model=f"{bb}+{head}", size=f"{h}x{w}", fraction_of_peak=r["gflops"] / peak)
        fwd.append(r)
        print(f"{bb}+{head} {h}×{w}: {r['img_per_s']:.2f} img/s, {r['gflop']:.1f} GFLOP/img·batch, "
              f"{r['gflops']:.1f} GFLOP/s = {100 * r['fraction_of_peak']:.0f} % of matmul peak")  # fmt: skip
    out["forward"] = fwd
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    path = res / f"{platform.node()}-{time.strftime('%Y%m%d-%H%M')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
