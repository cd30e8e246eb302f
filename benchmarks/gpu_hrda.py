"""`python -m benchmarks.gpu_hrda --out DIR` — HRDA's stages at the real crop on one GPU, against the pre-flight.

The check the HRDA issue asks of a GPU machine, as one command: for MIC(HRDA) (`gta2cs_mic_hrda`, stage daformer)
and DiGA + HRDA (`gta2cs_diga_hrda`, warm-up and self-training), with the paper's network (MiT-B5 + DAFormer head +
scale attention, random weights) on fake trees at the official sizes, 1024×1024 crops and the experiment's batch:
a few training steps and one validation on a 2048×1024 image with batched sliding windows, in `--precision`
(bf16-mixed by default). Reported per stage: s/step (the first step left out), peak GPU memory of the training
steps and of the validation (`torch.cuda.max_memory_allocated`, reset between the two), and beside them diga's
pre-flight estimate of each part (`estimate_stage_memory`, made on the CPU). Writes `gpu_hrda.json` and
`gpu_hrda.md` to `--out`. `--device cpu --scale 0.125` runs the same plumbing on a CPU at 1/8 size (no memory
numbers: those need CUDA).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

GB = 1024**3
CASES = (("gta2cs_mic_hrda", "daformer"), ("gta2cs_diga_hrda", "warmup"), ("gta2cs_diga_hrda", "selftrain"))
# the frozen learned translator would need its own stage first: the training-free one stands in (6 MB of weights)
FOURIER = "translator@stage.module.translator=fourier"


class PhasePeaks(pl.Callback):
    """Wall time of each training step and peak GPU memory of the training steps and of the validation."""

    def __init__(self, out: str) -> None:
        self.out, self.step_seconds, self.started = out, [], 0.0
        self.peaks: dict[str, int] = {"train": 0, "validation": 0}
        self.validation_seconds = 0.0

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _peak(self) -> int:
        return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, i: int) -> None:
        self._sync()
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._sync()
        self.step_seconds.append(time.perf_counter() - self.started)
        self.peaks["train"] = max(self.peaks["train"], self._peak())

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync()
        if not trainer.sanity_checking:
            self.validation_seconds = time.perf_counter() - self.started
            self.peaks["validation"] = max(self.peaks["validation"], self._peak())
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        Path(self.out).write_text(json.dumps({"step_seconds": self.step_seconds, "peaks": self.peaks,
                                              "validation_seconds": self.validation_seconds,
                                              "batched": pl_module.inference.batched}))  # fmt: skip


def common_overrides(experiment: str, stage: str, run: Path, args: argparse.Namespace, data: Path,
                     vgg: Path) -> list[str]:  # fmt: skip
    side = max(32, int(512 * args.scale) // 8 * 8)
    return [f"experiment={experiment}", f"stage={stage}", f"paths.data_dir={data}", f"paths.output_dir={run}",
            f"paths.pretrained_dir={vgg.parent}", "model.pretrained=null", f"trainer.precision={args.precision}",
            f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", "trainer.devices=1",
            f"datamodule.scale={args.scale}", f"model.hrda.hr_crop_size=[{side},{side}]", "datamodule.num_workers=2",
            "logger=csv", "trainer.enable_progress_bar=false", *args.extra]  # fmt: skip


def selftrain_inputs(experiment: str, args: argparse.Namespace, data: Path, vgg: Path) -> list[str]:
    """Self-training reads the warm-up's model, its pseudo-labels and centroids: the warm-up case's model (random
    weights after a few steps) through the experiment's own pseudo-label and centroid stages."""
    from hydra.core.global_hydra import GlobalHydra

    from diga.config import compose_config
    from diga.tasks import run_task

    model = args.out / f"{experiment}-warmup" / "final_model.pt"
    if not model.is_file():
        raise RuntimeError(f"self-training needs the warm-up case's {model}: run the warm-up case first")
    for stage in ("pseudolabel", "centroids"):
        GlobalHydra.instance().clear()
        run = args.out / f"{experiment}-{stage}"
        run_task(compose_config([*common_overrides(experiment, stage, run, args, data, vgg),
                                 f"stage.init_from={model}"]))  # fmt: skip
    return [f"stage.init_from={model}", f"stage.pseudo_labels={args.out / f'{experiment}-pseudolabel'}/pseudo_labels",
            f"stage.centroids={args.out / f'{experiment}-centroids'}/centroids.pt"]  # fmt: skip


def run_case(experiment: str, stage: str, args: argparse.Namespace, data: Path, vgg: Path) -> dict[str, Any]:
    from hydra.core.global_hydra import GlobalHydra

    from diga.config import compose_config
    from diga.tasks import check_run, run_task
    from diga.tasks.fit import build_module, estimate_stage_memory

    run = args.out / f"{experiment}-{stage}"
    probe = run / "probe.json"
    inputs = selftrain_inputs(experiment, args, data, vgg) if stage == "selftrain" else []
    overrides = [*common_overrides(experiment, stage, run, args, data, vgg), *inputs,
                 *([FOURIER] if stage in ("warmup", "selftrain") else []),
                 f"steps.{stage}={args.steps}", f"val_every={args.steps}", f"ckpt_every={args.steps}",
                 "trainer.num_sanity_val_steps=0", "memory_estimate=false",  # measured as configured, not switched
                 f"+callbacks.hrda_probe={{_target_:benchmarks.gpu_hrda.PhasePeaks,out:'{probe}'}}"]  # fmt: skip
    GlobalHydra.instance().clear()
    cfg = compose_config(overrides)
    check_run(cfg)
    image = (int(1024 * args.scale), int(2048 * args.scale))
    estimate = estimate_stage_memory(cfg, build_module(cfg), image)
    run.mkdir(parents=True, exist_ok=True)
    run_task(cfg)
    seen = json.loads(probe.read_text())
    timed = seen["step_seconds"][1:] or seen["step_seconds"]
    return {"experiment": experiment, "stage": stage, "precision": args.precision, "device": args.device,
            "s_per_step": sum(timed) / len(timed), "validation_s": seen["validation_seconds"],
            "batched_validation": seen["batched"], "peak_train_gb": seen["peaks"]["train"] / GB,
            "peak_validation_gb": seen["peaks"]["validation"] / GB, "estimate_weights_gb": estimate.weights / GB,
            "estimate_train_gb": (estimate.weights + estimate.activations) / GB,
            "estimate_validation_gb": (estimate.weights + estimate.inference) / GB}  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| experiment | stage | precision | s/step | training: peak / estimate GB | validation (batched) s, "
             "peak / estimate GB |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['experiment']} | {r['stage']} | – | error: {r['error'][:120]} | – | – |")
            continue
        lines.append(f"| {r['experiment']} | {r['stage']} | {r['precision']} | {r['s_per_step']:.2f} | "
                     f"{r['peak_train_gb']:.1f} / {r['estimate_train_gb']:.1f} | {r['validation_s']:.1f} s, "
                     f"{r['peak_validation_gb']:.1f} / {r['estimate_validation_gb']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--steps", type=int, default=4, help="training steps per stage (the first is not timed)")
    parser.add_argument("--scale", type=float, default=1.0, help="image-size factor (0.125: the CPU plumbing check)")
    parser.add_argument("--cases", default=",".join(f"{e}:{s}" for e, s in CASES))
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every case")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu_hrda: no CUDA device here (--device cpu --scale 0.125 checks the plumbing)")
    from benchmarks.fake_weights import write_weights
    from diga.data.fake_trees import write_street_trees

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    write_street_trees(data, scale=args.scale, counts={"gta5": 4, "cityscapes_train": 4, "cityscapes_val": 1})
    vgg = write_weights(args.out / "weights")["vgg19"]
    rows = []
    for case in args.cases.split(","):
        experiment, stage = case.split(":")
        try:
            rows.append(run_case(experiment, stage, args, data, vgg))
        except Exception as e:  # report and go on: one stage's failure must not hide the others
            rows.append({"experiment": experiment, "stage": stage, "error": f"{type(e).__name__}: {e}"[-600:]})
        (args.out / "gpu_hrda.json").write_text(json.dumps(rows, indent=1))
        print(table(rows).splitlines()[-1], flush=True)
    (args.out / "gpu_hrda.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
