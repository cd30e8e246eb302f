"""`make bench` / `python -m benchmarks.run [--quick]` — every number here is measured in this one run.

Per case (SegFormer-B0 at the toy size; SegFormer-B0 and -B5 at 512×1024): training-step img/s and peak memory of
the source-only, warm-up and self-training steps, pseudo-label generation img/s and memory against the reference's
procedure, inference img/s and forward GFLOP/s as a fraction of this machine's matmul peak; the vectorised
centroid/selection/mask ops against per-class loops; the speed options (bf16 autocast, channels-last,
torch.compile) against fp32 at the toy size. Each training/generation measurement runs in its own process so its
peak memory is its own. Runs on the GPU when there is one (CUDA work is synchronised before every clock read).
Results go to `benchmarks/results/<host>-<date>.json` and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import torch

from benchmarks import forward, ops, pseudolabels, train_step
from benchmarks.device import bench_device
from benchmarks.isolate import MeasurementFailed, isolated

TOY = ["experiment=toy", "+datamodule.val.toy_target.limit=8"]
BIG = ["experiment=toy", "toy_spec={height:512,width:1024,source_train:4,source_val:1,target_train:4,target_val:1}",
       "datamodule.crop_size=[512,1024]", "datamodule.source.loader.random_scale=[1.0,1.0]",
       "datamodule.target.loader.random_scale=[1.0,1.0]",
       "datamodule.source.loader.streams=[{resize:null,batch_size:1}]",
       "datamodule.target.loader.streams=[{resize:null,batch_size:1}]",
       "+datamodule.val.toy_target.limit=1"]  # fmt: skip


def cases(quick: bool, steps: int) -> dict[str, dict[str, Any]]:
    out = {"b0-toy": {"overrides": TOY, "batch": 8, "steps": steps, "skip": 5, "pl_images": 64,
                      "desc": "SegFormer-B0, toy 80×160 (64×128 crops), batch 8"}}  # fmt: skip
    if not quick:
        for name, model, n in (("b0-512x1024", "segformer_b0", 4), ("b5-512x1024", "segformer_b5", 3)):
            out[name] = {"overrides": [*BIG, f"model={model}"], "batch": 1, "steps": n, "skip": 1, "pl_images": 2,
                         "desc": f"SegFormer-{model[-2:].upper()}, 512×1024, batch 1"}  # fmt: skip
    return out


def fmt_mem(r: dict[str, Any]) -> str:
    gpu = f", GPU peak {r['peak_cuda_gb']:.2f} GB" if "peak_cuda_gb" in r else ""
    return f"peak RSS {r['peak_rss_gb']:.2f} GB (+{r['peak_rss_gb'] - r['rss_before_gb']:.2f} over start){gpu}"


def run_case(name: str, case: dict[str, Any], work: Path, quick: bool) -> dict[str, Any]:
    ov, batch, steps, skip = case["overrides"], case["batch"], case["steps"], case["skip"]
    ov = [*ov, f"paths.data_dir={work / 'data'}"]  # rendered once by the first run of the case, never timed
    if torch.cuda.is_available():
        ov.append("trainer=gpu")
    print(f"\n== {name}: {case['desc']} ==")
    res: dict[str, Any] = {"desc": case["desc"], "train": []}
    variants = {"fp32": []}
    if name == "b0-toy":
        variants |= {"bf16-mixed": ["trainer.precision=bf16-mixed"], "channels-last": ["channels_last=true"]}
        if not quick:
            variants["torch.compile"] = ["compile_model=true"]
    for variant, extra in variants.items():
        r = isolated(train_step.measure, "source_only", [*ov, *extra], work / f"so-{variant}", steps, skip, batch)
        res["train"].append({"stage": "source_only", "variant": variant, **r})
        print(f"source_only  {variant:<14} {r['img_per_s']:8.2f} img/s  {fmt_mem(r)}")
    model = work / "so-fp32" / "source_only" / "final_model.pt"

    ours = isolated(pseudolabels.measure_ours, model, work / "pl", ov, case["pl_images"])
    naive = isolated(pseudolabels.measure_naive, model, work / "pl", ov, case["pl_images"])
    res["pseudolabel"] = {"ours": ours, "reference_loop": naive, "speedup": ours["img_per_s"] / naive["img_per_s"]}
    print(f"pseudo-labels ours      {ours['img_per_s']:8.2f} img/s  {fmt_mem(ours)}")
    print(f"pseudo-labels REF loop  {naive['img_per_s']:8.2f} img/s  {fmt_mem(naive)}  "
          f"(+{naive['buffer_mb_per_image']:.0f} MB float64 buffer per image) → ours "
          f"{res['pseudolabel']['speedup']:.2f}×")  # fmt: skip

    st_inputs = isolated(_selftrain_inputs, model, work / "st-inputs", ov)["overrides"]
    for stage, extra in (("warmup", ["stage.module.translator.kind=fourier"]),
                         ("selftrain", ["stage.module.translator.kind=fourier", *st_inputs])):  # fmt: skip
        r = isolated(train_step.measure, stage, [*ov, *extra], work / stage, steps, skip, batch)
        res["train"].append({"stage": stage, "variant": "fp32", **r})
        print(f"{stage:<12} fp32           {r['img_per_s']:8.2f} img/s  {fmt_mem(r)}")
    base = {r["stage"]: r["img_per_s"] for r in res["train"] if r["variant"] == "fp32"}
    for r in res["train"]:
        r["vs_fp32"] = r["img_per_s"] / base[r["stage"]]
    return res


def _selftrain_inputs(model: Path, work: Path, overrides: list[str]) -> dict[str, Any]:
    return {"overrides": train_step.selftrain_inputs(model, work, overrides)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="toy case only, no torch.compile, no 512×1024 forwards")
    ap.add_argument("--steps", type=int, default=30, help="training steps per toy measurement")
    args = ap.parse_args()
    t0 = time.perf_counter()
    out: dict[str, Any] = {"host": platform.node(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                           "date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick}  # fmt: skip

    print("== vectorised ops vs reference-style loops ==")
    out["ops"] = ops.run(bench_device())
    for r in out["ops"]:
        print(f"{r['op']:<62} {r['vectorised_ms']:8.2f} ms vs {r['loop_ms']:8.2f} ms → {r['speedup']:6.1f}×")

    work = Path(tempfile.mkdtemp(prefix="diga-bench-"))
    out["cases"] = {}
    for name, c in cases(args.quick, args.steps).items():
        try:
            out["cases"][name] = run_case(name, c, work / name, args.quick)
        except MeasurementFailed as e:
            print(f"!! {name}: {e}")
            out["cases"][name] = {"desc": c["desc"], "error": str(e)}

    print("\n== inference / forward efficiency ==")
    peak = forward.matmul_peak_gflops()
    out["matmul_peak_gflops"] = peak
    print(f"matmul peak (fp32, 2048², {out['device']}): {peak:.1f} GFLOP/s")
    shapes = [("mit_b0", 80, 160, 8)] + ([] if args.quick else [("mit_b0", 512, 1024, 1), ("mit_b5", 512, 1024, 1)])
    fwd = []
    for bb, h, w, bs in shapes:
        r = isolated(forward.forward_stats, bb, "segformer", h, w, batch=bs, repeat=2 if bb == "mit_b5" else 5)
        r.update(model=f"{bb}+segformer", size=f"{h}x{w}", batch=bs, fraction_of_peak=r["gflops"] / peak)
        fwd.append(r)
        print(f"{bb}+segformer {h}×{w} batch {bs}: {r['img_per_s']:.2f} img/s, {r['gflop']:.1f} GFLOP/batch, "
              f"{r['gflops']:.1f} GFLOP/s = {100 * r['fraction_of_peak']:.0f} % of matmul peak; "
              f"{fmt_mem(r)}")  # fmt: skip
    out["forward"] = fwd
    out["wall_s"] = time.perf_counter() - t0
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    path = res / f"{platform.node()}-{time.strftime('%Y%m%d-%H%M')}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path} ({out['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
