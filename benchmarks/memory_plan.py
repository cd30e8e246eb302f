"""`python -m benchmarks.memory_plan` — which GPU each experiment's training stages fit, computed from measurements.

For every real experiment and training stage, with the paper's network (MiT-B5 + DAFormer head, DeepLabV2-ResNet-101,
HRNet-W48 + OCR; MiT-B5 + DAFormer head with HRDA for the *_hrda experiments; random weights) at the authors' crop and
batch composition, diga's own pre-flight estimate (`diga.utils.memory`: one probe forward records every tensor
autograd saves, scaled to the real crop and the number of images a step forwards with gradients, plus weights,
gradients and optimiser state; or, when larger, one validation batch of a Cityscapes image with the experiment's
inference, measured on two smaller probes) in fp32, fp32 with activation checkpointing, bf16 autocast, and bf16
with activation checkpointing. A stage fits a GPU of G GB when `estimate × MARGIN + OVERHEAD_GB ≤ G` (CUDA context,
cuDNN workspace and allocator slack; an assumption until measured on a GPU, stated beside the table).
Runs on the CPU in about 20 minutes (a process per row); writes benchmarks/results/memory-plan-<host>-<date>.json."""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

GB = 1024**3
MARGIN, OVERHEAD_GB = 1.25, 1.5
GPUS = (16, 24, 40, 48, 80, 141)
# the largest validation image of every experiment here: Cityscapes val at its native size (Mapillary's 1080×1920 and
# BDD100K's 720×1280 are smaller); the stages that validate are sized for the larger of a training step and one
# validation batch (HRDA: every 1024×1024 window of the image in one batch, each with its 9 detail windows)
VAL_IMAGE = (1024, 2048)
EXPERIMENTS = {
    "gta2cs": ("source_only", "translator", "warmup", "selftrain"),
    "synthia2cs": ("source_only", "translator", "warmup", "selftrain"),
    "gta_dg": ("source_only", "warmup"),
    "cs_semi": ("source_only", "warmup", "selftrain"),
    "gta2cs_mic": ("daformer",),  # the baselines' one adapting stage (the DAFormer baseline is MIC without masking)
    "synthia2cs_mic": ("daformer",),
    "gta2cs_hrda": ("daformer",),  # HRDA: DAFormer's self-training on the multi-resolution model
    "gta2cs_mic_hrda": ("daformer",),  # MIC on HRDA: 1024×1024 crops, a 512×512 detail window, context at 0.5
    "gta2cs_diga_hrda": ("warmup", "selftrain"),  # DiGA on the same multi-resolution model
}
OPTIONS = {
    "fp32": [],
    "checkpointing": ["checkpointing"],  # fp32 with activation checkpointing: GPUs without bf16 (V100, T4)
    "bf16": ["trainer.precision=bf16-mixed"],
    "bf16 + checkpointing": ["trainer.precision=bf16-mixed", "checkpointing"],
}
CHECKPOINTING = {"translator": "stage.module.grad_checkpointing=true"}  # the segmentor stages: model.…
# the translator computes in bf16 only when asked to (it trains in fp32 by default, docs/gpus.md)
TRANSLATOR_BF16 = "stage.module.mixed_precision=true"
# Inputs a stage reads from earlier stages are not needed to size it. The learned translator runs frozen and without
# gradients in warm-up and self-training (6 MB of weights): the Fourier one stands in for it. The centroids (C×D)
# are negligible: offline selection stands in for the consensus.
FROZEN_TRANSLATOR = "translator@stage.module.translator=fourier"
PRIOR = [
    "stage.init_from=null",
    "stage.pseudo_labels=null",
    "stage.centroids=null",
    "stage.module.pl_selection=offline",
]
NO_INPUTS = {"source_only": [], "translator": [], "daformer": [], "warmup": [FROZEN_TRANSLATOR],
             "selftrain": [*PRIOR, FROZEN_TRANSLATOR]}  # fmt: skip


def estimate(experiment: str, stage: str, option: list[str], pretrained_dir: Path,
             model: str | None = None) -> dict[str, Any]:  # fmt: skip
    from hydra.core.global_hydra import GlobalHydra

    from diga.config import compose_config
    from diga.tasks.fit import build_module, estimate_stage_memory

    GlobalHydra.instance().clear()
    option = [CHECKPOINTING.get(stage, "model.grad_checkpointing=true") if o == "checkpointing" else o
              for o in option]  # fmt: skip
    if stage == "translator" and "trainer.precision=bf16-mixed" in option:
        option.append(TRANSLATOR_BF16)
    overrides = [f"experiment={experiment}", f"stage={stage}", "trainer=cpu", "paths.output_dir=/tmp/diga-memplan",
                 *([f"model={model}"] if model else []), "model.pretrained=null",
                 f"paths.pretrained_dir={pretrained_dir}", *NO_INPUTS[stage], *option]  # fmt: skip
    cfg = compose_config(overrides)
    module = build_module(cfg)
    est = estimate_stage_memory(cfg, module, VAL_IMAGE)  # the same estimate a CPU run logs before it starts
    need = est.total / GB * MARGIN + OVERHEAD_GB
    return {"crop": list(cfg.datamodule.crop_size), "weights_gb": est.weights / GB,
            "activations_gb": est.activations / GB, "validation_gb": est.inference / GB,
            "estimate_gb": est.total / GB, "need_gb": need,
            "smallest_gpu_gb": next((g for g in GPUS if need <= g), None)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--options", default=",".join(OPTIONS), help=f"some of: {', '.join(OPTIONS)}")
    parser.add_argument("--stages", default="", help="some of each experiment's training stages (default: all)")
    parser.add_argument("--model", default=None, help="another network than the experiment's (e.g. dinov2_vit_l)")
    parser.add_argument(
        "--weights",
        type=Path,
        default=Path("/tmp/diga-memplan-weights"),
        help="where random-init weight files are written (the translator's VGG-19 perceptual loss)",
    )
    args = parser.parse_args()
    from benchmarks.fake_weights import write_weights
    from benchmarks.isolate import MeasurementFailed, isolated

    pretrained_dir = write_weights(args.weights)["vgg19"].parent
    out = Path(__file__).parent / "results" / f"memory-plan-{platform.node()}-{time.strftime('%Y%m%d-%H%M')}.json"
    out.parent.mkdir(exist_ok=True)
    rows = []
    wanted = [s for s in args.stages.split(",") if s]
    for name in args.experiments.split(","):
        for stage in [s for s in EXPERIMENTS[name] if not wanted or s in wanted]:
            for label in args.options.split(","):
                option = OPTIONS[label]
                t = time.perf_counter()
                try:  # each in its own process: modules built by earlier rows do not pile up in memory
                    r = isolated(estimate, name, stage, option, pretrained_dir, args.model)
                except MeasurementFailed as e:  # report and go on: one stage's failure must not hide the others
                    r = {"error": str(e)[-300:]}
                rows.append({"experiment": name, "model": args.model, "stage": stage, "option": label, **r,
                             "seconds": time.perf_counter() - t})  # fmt: skip
                fit = r.get("smallest_gpu_gb")
                print(f"{name:10s} {stage:11s} {label:22s} " + (
                    f"estimate {r['estimate_gb']:6.1f} GB → needs ≈{r['need_gb']:5.1f} GB: "
                    f"{f'fits {fit} GB' if fit else 'more than 141 GB'}" if "error" not in r else r["error"]),
                    flush=True)  # fmt: skip
                out.write_text(json.dumps({"margin": MARGIN, "overhead_gb": OVERHEAD_GB, "rows": rows}, indent=1))
    print(table(rows))
    print(f"wrote {out}")


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per experiment × stage, per option the estimate and the smallest GPU it fits."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        fit = r.get("smallest_gpu_gb")
        cell = "error" if "error" in r else f"{r['estimate_gb']:.1f} → {f'{fit} GB' if fit else '> 141 GB'}"
        name = r["experiment"] + (f" ({r['model']})" if r.get("model") else "")
        cells.setdefault((name, r["stage"]), {})[r["option"]] = cell
    lines = ["| experiment | stage | " + " | ".join(OPTIONS) + " |", "|---|---|" + "---|" * len(OPTIONS)]
    for (experiment, stage), by_option in cells.items():
        lines.append(f"| {experiment} | {stage} | " + " | ".join(by_option.get(o, "–") for o in OPTIONS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
