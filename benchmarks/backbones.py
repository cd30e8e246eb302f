"""`python -m benchmarks.backbones` — one warm-up and one self-training step per network, fp32 against bf16, measured.

The paper's networks and the foundation-model encoders at their experiment's real crop and batch composition:
MiT-B5 + DAFormer head and DINOv2 ViT-B/14, ViT-L/14 (+ DAFormer head) on gta2cs (512×896 crops; warm-up 1 + 2
source images, self-training 2 + 1 source and 2 + 1 target), HRNet-W48 + OCR on cs_semi. Each row is a real
`stage=warmup|selftrain` run of a few steps on the fake real-size trees of the rehearsal (`diga.data.fake_trees`), in
its own process: median s/step after the first steps, peak resident memory (CPU) or peak allocated memory (GPU),
diga's pre-flight estimate beside it, and the hours the experiment's schedule would take at that speed.

Weights are random (same memory and time as pretrained ones). What stands in for the inputs of earlier stages, none
of which changes what a step costs to within its noise: the Fourier translator for the learned one (frozen, 6 MB, no
gradients), random pseudo-labels, offline selection for the consensus (the centroid distances are a C×D matmul
per pixel of the 1/4-resolution feature map; centroids are not needed to size or time the step).
Writes benchmarks/results/backbones-<host>-<date>.json after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.device import machine, machine_line
from benchmarks.fake_weights import write_weights
from benchmarks.isolate import MeasurementFailed, MemoryCapReached, isolated
from diga.data.fake_trees import write_street_trees

GB = 1024**3
CASES: dict[str, tuple[str, list[str]]] = {  # name: (experiment, overrides of its model)
    "MiT-B5 + DAFormer": ("gta2cs", ["model.pretrained=null"]),
    "HRNet-W48 + OCR": ("cs_semi", ["model.pretrained=null"]),
    "DINOv2 ViT-B/14 + DAFormer": ("gta2cs", ["model=dinov2_vit_b", "model.pretrained=null"]),
    "DINOv2 ViT-L/14 + DAFormer": ("gta2cs", ["model=dinov2_vit_l", "model.pretrained=null"]),
}
OPTIONS = {
    "fp32": [],
    "bf16": ["trainer.precision=bf16-mixed"],
    "fp32 + checkpointing": ["model.grad_checkpointing=true"],
    "bf16 + checkpointing": ["trainer.precision=bf16-mixed", "model.grad_checkpointing=true"],
}
CHECKPOINTED = ("DINOv2 ViT-L/14 + DAFormer",)  # the one network whose fit on a 24 GB GPU depends on it
STAGES = ("warmup", "selftrain")
# the stage's closing evaluation is not part of a step: two-scale sliding-window inference on full 1024×2048 images
# took longer than the measured step itself (ViT-B: over 10 min after a 648 s step on 2 cores)
NO_EVALUATION = ["~datamodule.val.cityscapes"]
STAND_INS = {
    "warmup": ["translator@stage.module.translator=fourier"],
    "selftrain": ["translator@stage.module.translator=fourier", "stage.init_from=null", "stage.centroids=null",
                  "stage.module.pl_selection=offline"],
}  # fmt: skip


def stage_overrides(case: str, stage: str, option: str, data: Path, weights: Path, scale: float) -> list[str]:
    """The composed run of one row (without the step count and the output folder)."""
    import torch

    experiment, model = CASES[case]
    return [f"experiment={experiment}", f"stage={stage}", f"trainer={'gpu' if torch.cuda.is_available() else 'cpu'}",
            f"paths.data_dir={data}", f"paths.pretrained_dir={weights}", f"datamodule.scale={scale}",
            "datamodule.num_workers=1", "callbacks=none", *NO_EVALUATION, *model, *STAND_INS[stage],
            *OPTIONS[option]]  # fmt: skip


def fake_pseudo_labels(overrides: list[str], folder: Path) -> Path:
    """A random-id `<name>.png` for every target training image of the composed run (any resolution is read)."""
    import numpy as np
    from hydra.utils import instantiate

    from diga.config import compose_config
    from diga.data.io import save_label_png

    cfg = compose_config([*overrides, "stage.pseudo_labels=/unused", "paths.output_dir=/tmp/diga-bench-pl"])
    datamodule = instantiate(cfg.datamodule, _recursive_=False)
    stream = cfg.datamodule.target.loader.streams[0]
    dataset = datamodule.build_train_dataset("target", stream, pseudo_label_dir=None)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for sample in dataset.samples:
        save_label_png(folder / f"{sample.name}.png", rng.integers(0, 19, (64, 128), dtype=np.uint8))
    return folder


def describe_row(overrides: list[str], work: Path, stage: str) -> dict[str, Any]:
    """What a row is, before it runs: diga's memory estimate, source images per step, schedule length, crop (in
    its own process too, so a row stopped at the memory cap still shows its estimate)."""
    from diga.config import compose_config
    from diga.data.datamodule import images_per_step, scaled_size
    from diga.tasks.fit import build_module, estimate_stage_memory
    from diga.utils.hydra import to_plain

    cfg = compose_config([*overrides, f"paths.output_dir={work / 'estimate'}"])
    est = estimate_stage_memory(cfg, build_module(cfg))
    images = images_per_step(to_plain(cfg.datamodule.source))  # source images per step (img/s counts these)
    return {"images_per_step": images, "estimate_gb": est.total / GB, "schedule_steps": int(cfg.steps[stage]),
            "crop": list(scaled_size(cfg.datamodule.crop_size, float(cfg.datamodule.get("scale", 1.0))))}  # fmt: skip


def measure_row(overrides: list[str], work: Path, steps: int, skip: int, stage: str, images: int) -> dict[str, Any]:
    """Median s/step of the real stage after `skip` steps (in the row's own process, so the peak memory that
    `isolated` adds is this step's)."""
    from benchmarks.train_step import measure

    return measure(stage, overrides, work, steps, skip, images)


def run_row(overrides: list[str], work: Path, steps: int, skip: int, stage: str,
            min_available_gb: float | None) -> dict[str, Any]:  # fmt: skip
    """One table row: its description, then its measurement, or the reason it has none (`stopped_at_gb` when the
    machine's available memory fell below `min_available_gb`: the row's peak is at least that)."""
    row = isolated(describe_row, overrides, work, stage)
    del row["peak_rss_gb"], row["rss_before_gb"]  # the describing process's, not the step's
    row.pop("peak_cuda_gb", None)
    try:
        row.update(isolated(measure_row, overrides, work, steps, skip, stage, row["images_per_step"],
                            min_available_gb=min_available_gb))  # fmt: skip
    except MemoryCapReached as e:
        row["stopped_at_gb"] = e.reached_gb
    return row


def rows_to_run(cases: list[str], options: list[str] | None) -> list[tuple[str, str, str]]:
    out = []
    for case in cases:
        names = options or (list(OPTIONS) if case in CHECKPOINTED else ["fp32", "bf16"])
        out += [(case, stage, option) for stage in STAGES for option in names]
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per network, stage, option and crop — s/step, img/s, peak memory next to diga's estimate and the
    pre-flight warning's likely CPU peak, and the hours the experiment's schedule would take at this speed."""
    from diga.utils.memory import PEAK_FACTOR, PEAK_OVERHEAD

    lines = ["| network | stage | option | crop | s/step | img/s | peak memory | estimate | likely CPU peak | "
             "schedule at this speed |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        head = f"| {r['case']} | {r['stage']} | {r['option']} |"
        if "failed" in r:
            lines.append(f"{head} | failed: {r['failed'][-120:]} | | | | | |")
            continue
        crop = "×".join(map(str, r["crop"]))
        likely = f"{r['estimate_gb'] * PEAK_FACTOR + PEAK_OVERHEAD / GB:.1f} GB"
        if "stopped_at_gb" in r:
            lines.append(f"{head} {crop} | – | – | over {r['stopped_at_gb']:.1f} GB RSS (stopped: memory full) | "
                         f"{r['estimate_gb']:.1f} GB | {likely} | does not fit here |")  # fmt: skip
            continue
        peak = r.get("peak_cuda_gb", r["peak_rss_gb"])
        where = "GPU" if "peak_cuda_gb" in r else "RSS"
        hours = r["s_per_step"] * r["schedule_steps"] / 3600
        schedule = f"{hours:,.0f} h ({r['schedule_steps']} steps)"
        lines.append(f"{head} {crop} | {r['s_per_step']:.0f} | {r['img_per_s']:.4f} | {peak:.1f} GB {where} | "
                     f"{r['estimate_gb']:.1f} GB | {likely} | {schedule} |")  # fmt: skip
    return "\n".join(lines)


def saved_rows(files: list[Path]) -> list[dict[str, Any]]:
    """The rows of earlier sittings, in file order, with the image scale and machine of each (rows that failed are
    left out: their reason is in the file)."""
    rows = []
    for f in files:
        data = json.loads(f.read_text())
        context = {"scale": data["scale"], "machine": data.get("machine")}
        rows += [{**r, **context} for r in data["rows"] if "failed" not in r]
    return rows


def in_reading_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by network, stage, option and image scale (sittings run rows in whatever order the machine allowed)."""

    cases, stages, options = list(CASES), list(STAGES), list(OPTIONS)

    def rank(names: list[str], name: str) -> int:
        return names.index(name) if name in names else len(names)  # unknown names last

    def key(r: dict[str, Any]) -> tuple:
        return rank(cases, r["case"]), rank(stages, r["stage"]), rank(options, r["option"]), r.get("scale", 1.0)

    return sorted(rows, key=key)


def machines_caption(rows: list[dict[str, Any]]) -> str:
    """Which machines the rows were measured on (files older than the `machine` field say "not recorded"): speeds
    of different machines are not comparable, so a table that mixes them must say so."""
    lines = {machine_line(r["machine"]) if r.get("machine") else "machine not recorded in the file" for r in rows}
    return "\n".join(f"Measured on: {line}" for line in sorted(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("DIGA_REHEARSAL_DIR", "/tmp/diga-rehearsal")))
    parser.add_argument("--cases", default=",".join(CASES), help=f"some of: {', '.join(CASES)}")
    parser.add_argument("--options", default="", help=f"some of: {', '.join(OPTIONS)} (default: fp32 and bf16; "
                        "the checkpointed ones too for ViT-L)")  # fmt: skip
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--steps", type=int, default=3, help="training steps per row")
    parser.add_argument("--skip", type=int, default=1, help="steps not timed (kernel selection, allocator warm-up)")
    parser.add_argument("--scale", type=float, default=1.0, help="image-size factor (the slow test runs 0.25)")
    parser.add_argument("--tabulate", nargs="+", type=Path, metavar="JSON",
                        help="print the table of earlier sittings' result files and stop")  # fmt: skip
    parser.add_argument("--min-available-gb", type=float, default=1.5,
                        help="stop a row once the machine's available memory falls below this and report it as "
                        "not fitting, before the OOM killer acts (0: no limit)")  # fmt: skip
    args = parser.parse_args()
    if args.tabulate:
        rows = in_reading_order(saved_rows(args.tabulate))
        print(f"{machines_caption(rows)}\n\n{table(rows)}")
        return

    data = args.work / f"data-{args.scale}"
    write_street_trees(data, args.scale)
    weights = write_weights(args.work / "weights")["vgg19"].parent
    pseudo: dict[str, Path] = {}  # per experiment: the self-training rows of one experiment share its target images
    out = Path(__file__).parent / "results" / f"backbones-{platform.node()}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    options = [o.strip() for o in args.options.split(",") if o.strip()] or None
    stages = set(args.stages.split(","))
    rows: list[dict[str, Any]] = []
    host = machine()
    print(f"Measuring on: {machine_line(host)}", flush=True)
    for case, stage, option in rows_to_run(args.cases.split(","), options):
        if stage not in stages:
            continue
        overrides = stage_overrides(case, stage, option, data, weights, args.scale)
        if stage == "selftrain":
            experiment = CASES[case][0]
            if experiment not in pseudo:
                pseudo[experiment] = fake_pseudo_labels(overrides, args.work / "bench-pseudo-labels" / experiment)
            overrides.append(f"stage.pseudo_labels={pseudo[experiment]}")
        row: dict[str, Any] = {"case": case, "stage": stage, "option": option, "steps": args.steps, "skip": args.skip}
        # a folder per sitting: diga refuses to write a stage over an earlier run of it
        work = args.work / "backbones" / out.stem / f"{case}-{stage}-{option}".replace(" ", "_").replace("/", "")
        try:
            row.update(run_row(overrides, work, args.steps, args.skip, stage, args.min_available_gb or None))
        except MeasurementFailed as e:  # e.g. killed for memory: report it and go on with the next row
            row["failed"] = str(e)[-500:]
        rows.append(row)
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps({"cpu_count": os.cpu_count(), "machine": host, "scale": args.scale, "rows": rows},
                                  indent=1))  # fmt: skip
    print(table(rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
