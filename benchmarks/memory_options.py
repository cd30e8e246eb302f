"""`python -m benchmarks.memory_options` — peak memory and step time of the two heaviest steps, per memory option.

The learned translator at the authors' batch (2 + 2 images, 512×896, width 64, VGG-19 perceptual loss) and the
domain-generalisation warm-up at the authors' batch (DeepLabV2-ResNet-101, 2 + 2 source images × 2 views plus the
teacher), each as one training step on the fake real-size data of the rehearsal, in its own process (so the peak
resident memory is the step's), with: nothing, activation checkpointing, bf16 autocast, both, and — for the
warm-up — micro-batches. diga's own pre-flight estimate is printed beside each measurement; a configuration whose
likely resident peak (`MemoryEstimate.likely_peak`, the rule of the pre-flight warning) exceeds the free memory is
reported and not run (on this machine it would be killed).
Results: benchmarks/results/memory-<host>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.device import machine
from benchmarks.fake_weights import write_weights
from benchmarks.isolate import MeasurementFailed, isolated
from diga.data.fake_trees import write_street_trees

GB = 1024**3
OPTIONS = {
    "translator": {  # the translator computes in bf16 only when asked to (stage.module.mixed_precision)
        "fp32": [],
        "checkpointing": ["stage.module.grad_checkpointing=true"],
        "bf16": ["trainer.precision=bf16-mixed", "stage.module.mixed_precision=true"],
        "checkpointing + bf16": ["stage.module.grad_checkpointing=true", "trainer.precision=bf16-mixed",
                                 "stage.module.mixed_precision=true"],
    },
    "warmup": {
        "fp32": [],
        "checkpointing": ["model.grad_checkpointing=true"],
        "bf16": ["trainer.precision=bf16-mixed"],
        "micro-batches 2": ["stage.module.micro_batches=2"],
        "checkpointing + bf16": ["model.grad_checkpointing=true", "trainer.precision=bf16-mixed"],
        "checkpointing + bf16 + micro-batches 2": ["model.grad_checkpointing=true", "trainer.precision=bf16-mixed",
                                                    "stage.module.micro_batches=2"],
    },
}  # fmt: skip
EXPERIMENT = {"translator": "gta2cs", "warmup": "gta_dg"}


def _overrides(stage: str, work: Path, data: Path, weights: dict[str, Path], steps: int) -> list[str]:
    out = [f"experiment={EXPERIMENT[stage]}", f"stage={stage}", "trainer=cpu", f"paths.data_dir={data}",
           f"paths.root_dir={work}", f"paths.pretrained_dir={weights['vgg19'].parent}", f"trainer.max_steps={steps}",
           f"val_every={100 * steps}", f"ckpt_every={100 * steps}", "datamodule.num_workers=0", "logger=none",
           "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "callbacks=none"]  # fmt: skip
    if stage == "warmup":
        out.append("model.pretrained=null")  # ResNet-101 at random init: same memory and time as ImageNet weights
    return out


def _one(overrides: list[str], out_dir: Path) -> dict[str, Any]:
    from diga.config import compose_config
    from diga.tasks import run_task
    from diga.utils.timing import step_parts

    metrics = run_task(compose_config([*overrides, f"paths.output_dir={out_dir}"]))
    timings = json.loads((out_dir / "timings.json").read_text())
    steps = timings.get("training steps", {"seconds": float("nan"), "count": 1})
    return {"estimate_gb": (metrics.get("memory_estimate_bytes") or 0) / GB,
            "s_per_step": steps["seconds"] / max(steps["count"], 1), "step_parts_s": step_parts(timings)}  # fmt: skip


def _estimate(overrides: list[str]) -> dict[str, float]:
    """diga's estimate and the likely peak it predicts, without running the step (the module is built, one probe
    forward runs): the figures the pre-flight warning of the same run would use."""
    from diga.config import compose_config
    from diga.tasks.fit import build_module, estimate_stage_memory

    cfg = compose_config([*overrides, "paths.output_dir=/tmp/diga-memory-estimate"])
    est = estimate_stage_memory(cfg, build_module(cfg))
    return {"estimate_gb": est.total / GB, "likely_peak_gb": est.likely_peak / GB}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("DIGA_REHEARSAL_DIR", "/tmp/diga-rehearsal")))
    parser.add_argument("--steps", type=int, default=2, help="training steps per measurement (s/step is their mean)")
    parser.add_argument("--stages", default="translator,warmup")
    parser.add_argument("--options", default="", help="comma-separated option names to run (default: all)")
    args = parser.parse_args()
    from diga.utils.memory import available_bytes

    wanted = {o.strip() for o in args.options.split(",") if o.strip()}

    data = args.work / "data-1.0"
    write_street_trees(data, 1.0)
    weights = write_weights(args.work / "weights")
    out = Path(__file__).parent / "results" / f"memory-{platform.node()}-{time.strftime('%Y%m%d-%H%M')}.json"
    out.parent.mkdir(exist_ok=True)
    results, host = [], machine()  # the machine once: it does not change between rows
    for stage in args.stages.split(","):
        for name, extra in OPTIONS[stage].items():
            if wanted and name not in wanted:
                continue
            overrides = [*_overrides(stage, args.work, data, weights, args.steps), *extra]
            predicted = isolated(_estimate, overrides)
            est, likely = predicted["estimate_gb"], predicted["likely_peak_gb"]
            free = (available_bytes() or 0) / GB
            row: dict[str, Any] = {"stage": stage, "option": name, "steps": args.steps, "estimate_gb": est,
                                   "likely_peak_gb": likely, "free_gb": free}  # fmt: skip
            if likely > free:
                row["skipped"] = f"likely peak {likely:.1f} GB (estimate {est:.1f} GB) > {free:.1f} GB free"
            else:
                try:
                    r = isolated(_one, overrides, args.work / "memory" / stage / name.replace(" ", "_"))
                    row.update(peak_rss_gb=r["peak_rss_gb"], s_per_step=r["s_per_step"], step_parts_s=r["step_parts_s"])
                except MeasurementFailed as e:
                    row["failed"] = str(e)[-500:]
            results.append(row)
            print(json.dumps(row), flush=True)
            out.write_text(
                json.dumps({"cpu_count": os.cpu_count(), "machine": host, "results": results}, indent=1)
            )  # after each row
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
