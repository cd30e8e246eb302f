"""`make rehearsal` / `python -m benchmarks.rehearsal` — every real experiment's pipeline on fake data at real sizes.

For every real experiment (DiGA, domain generalisation, semi-supervised, and the DAFormer / MIC / HRDA baselines, on
GTA5, SYNTHIA, Cityscapes, ACDC and Dark Zurich): fake trees in the official layouts at the official image sizes
(`diga.data.fake_trees`: GTA5 1914×1052, Cityscapes 2048×1024, SYNTHIA 1280×760 with the DG split lists, BDD100K
1280×720, Mapillary 4032×3024 / 3264×2448 JPEGs, ACDC and Dark Zurich 1920×1080) and random-init weight files,
then `python -m diga.train experiment=X stage=pipeline` with the experiment's real crops, batch compositions,
inference scales and evaluation sets — a few steps per stage, on the CPU, with a small encoder (MiT-B0 for the MiT
experiments, ResNet-18 for DeepLabV2) — every step in its own process (`stage.isolate_steps`). Reported per step:
wall time, peak resident memory next to diga's estimate, where the time went (`timings.json`); per training stream:
data-loader images/s of one worker at the real sizes. `--scale 0.125` is the reduced size the slow test runs. Results:
benchmarks/results/rehearsal-<host>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.device import machine
from benchmarks.fake_weights import write_weights
from diga.data.fake_trees import write_street_trees

BASELINES = ("gta2cs_daformer", "gta2cs_mic", "synthia2cs_daformer", "synthia2cs_mic")  # one adaptation stage each
HRDA_BASELINES = ("gta2cs_hrda", "gta2cs_mic_hrda", "synthia2cs_hrda", "synthia2cs_mic_hrda")  # the same, on HRDA
ADVERSE_BASELINES = tuple(
    f"cs2{t}_{m}" for t in ("acdc", "darkzurich") for m in ("daformer", "mic", "hrda", "mic_hrda")
)
FOLDER_BASELINES = ("gta2folder_daformer", "gta2folder_mic")  # a folder of one's own images as the target
EXPERIMENTS = ("gta2cs", "synthia2cs", "gta_dg", "synthia_dg", "cs_semi", "cs2acdc", "cs2darkzurich", *BASELINES,
               *HRDA_BASELINES, *ADVERSE_BASELINES, "gta2cs_diga_hrda", "gta2folder", "synthia2folder",
               *FOLDER_BASELINES)  # fmt: skip
DG = ("gta_dg", "synthia_dg")  # DeepLabV2: a ResNet-18 stand-in
GB = 1024**3
FIT = "fit (all of the above inside)"  # the phase that spans a stage's whole training


def experiment_overrides(name: str, data: Path, weights: dict[str, Path], steps: int, scale: float) -> list[str]:
    """The rehearsal's changes to the real experiment: small encoder, few steps, the CPU, this data."""
    common = [f"experiment={name}", "trainer=cpu", f"paths.data_dir={data}", f"datamodule.scale={scale}",
              *(f"steps.{s}={steps}" for s in ("source_only", "translator", "warmup", "selftrain")),
              f"val_every={steps}", f"ckpt_every={steps}", "datamodule.num_workers=1", "logger=csv",
              "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
              f"paths.pretrained_dir={weights['vgg19'].parent}"]  # fmt: skip
    if name in (*BASELINES, *HRDA_BASELINES, *ADVERSE_BASELINES, *FOLDER_BASELINES):
        common.append(f"steps.daformer={steps}")
    if "hrda" in name:  # the detail window shrinks with the images (on the 8-pixel grid)
        side = max(32, int(512 * scale) // 8 * 8)
        common.append(f"model.hrda.hr_crop_size=[{side},{side}]")
    if name in DG:
        return [*common, "model.backbone.name=resnet18", f"model.pretrained={weights['resnet18']}"]
    return [*common, "model=segformer_b0", "model.head.name=daformer", f"model.pretrained={weights['mit_b0']}"]


def loader_throughput(name: str, data: Path, weights: dict[str, Path], scale: float,
                      images: int = 4) -> list[dict[str, Any]]:  # fmt: skip
    """Images/s of one data-loader worker for every training stream of every training stage (real sizes)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from diga.config import compose_config
    from diga.data.datamodule import describe_streams, scaled_size

    out = []
    one_stage = (*BASELINES, *HRDA_BASELINES, *ADVERSE_BASELINES, *FOLDER_BASELINES)
    own = {**dict.fromkeys(DG, ("warmup",)), "cs_semi": ("warmup", "selftrain"),  # no translator stage in these
           **dict.fromkeys(one_stage, ("daformer",))}  # fmt: skip
    stages = own.get(name, ("translator", "warmup", "selftrain"))
    for stage in stages:
        GlobalHydra.instance().clear()
        extra = ["stage.pseudo_labels=null", "stage.centroids=null", "stage.init_from=null",
                 "stage.module.translator.checkpoint=null", "stage.module.pl_selection=offline",
                 "datamodule.target_pseudo_label_dir=null"] if stage == "selftrain" else []  # fmt: skip
        if stage == "warmup":
            extra = ["stage.module.translator.checkpoint=null"]
        cfg = compose_config([*experiment_overrides(name, data, weights, 1, scale), f"stage={stage}",
                              "paths.output_dir=/tmp/diga-rehearsal-loader", *extra])  # fmt: skip
        dm = instantiate(cfg.datamodule, _recursive_=False)
        dm.setup("fit")
        for key, ds in dm.train_sets.items():
            domain, i = key.rsplit("_", 1)
            stream = dm.cfg[domain]["loader"]["streams"][int(i)]
            ds[(0, 0)]  # warm caches (file system, codecs)
            t = time.perf_counter()
            for k in range(images):
                ds[(k % len(ds), k + 1)]
            dt = time.perf_counter() - t
            resize = scaled_size(stream.get("resize"), scale)
            size = "native" if not resize else "×".join(map(str, resize))
            out.append({"stage": stage, "stream": f"{domain} {describe_streams(dm.cfg[domain]).split(':')[0]} "
                        f"@{size}", "img_per_s_per_worker": images / dt})  # fmt: skip
    GlobalHydra.instance().clear()
    return out


def run_pipeline(name: str, work: Path, data: Path, weights: dict[str, Path], steps: int, scale: float,
                 isolate: bool = True, resume: bool = False, extra: list[str] | None = None,
                 in_this_process: bool = False) -> dict[str, Any]:  # fmt: skip
    """The experiment's pipeline in a subprocess (`extra`: more overrides); returns its profile and results.

    `in_this_process`: composed and run here instead (`diga.tasks.run_task`, what the CLI calls), which saves the
    new process's imports; the reduced-size test runs eight experiments this way."""
    run_id = f"rehearsal-{name}-s{scale}"
    overrides = [*experiment_overrides(name, data, weights, steps, scale), *(extra or []), "stage=pipeline",
                 f"run_id={run_id}", f"paths.root_dir={work}", f"stage.isolate_steps={str(isolate).lower()}",
                 # the translator at the authors' batch needs ~36 GB without it (benchmarks/memory_options.py)
                 "++stage.step_overrides={translator:['stage.module.grad_checkpointing=true']}"]  # fmt: skip
    run = work / "logs" / "train" / name / "pipeline" / run_id
    if not resume:
        shutil.rmtree(run, ignore_errors=True)  # a fresh run: every step runs (and is timed)
    t = time.perf_counter()
    # Hydra's entry point names the run folder; composed here, it is given (the same folder)
    returncode, output = _run_here([*overrides, f"paths.output_dir={run}"]) if in_this_process else _run_cli(overrides)
    wall = time.perf_counter() - t
    result: dict[str, Any] = {"experiment": name, "wall_s": wall, "returncode": returncode, "run_dir": str(run)}
    if returncode != 0:
        result["error"] = output[-6000:]
        return result
    profile = json.loads((run / "pipeline_profile.json").read_text())
    for step, rec in profile.items():
        metrics_file = next(run.glob(f"*_{step}/metrics.json"), None)
        metrics = json.loads(metrics_file.read_text()) if metrics_file else {}
        rec["memory_estimate_bytes"] = metrics.get("memory_estimate_bytes")
        rec["results"] = {k: {m: v for m, v in r.items() if not m.startswith("iou/")}
                          for k, r in (metrics.get("results") or {}).items()}  # fmt: skip
    result["steps"] = profile
    result["pipeline_results"] = json.loads((run / "pipeline_results.json").read_text())
    return result


def _run_cli(overrides: list[str]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "diga.train", *overrides], capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def _run_here(overrides: list[str]) -> tuple[int, str]:
    import traceback

    from hydra.core.global_hydra import GlobalHydra

    from diga.config import compose_config
    from diga.tasks import run_task

    try:
        run_task(compose_config(overrides))
    except Exception:
        return 1, traceback.format_exc()
    finally:
        GlobalHydra.instance().clear()
    return 0, ""


def report(res: dict[str, Any]) -> str:
    from diga.utils.timing import STEP_PART_PREFIX, step_parts

    lines = [f"## {res['experiment']} — {res['wall_s']:.0f} s in all"]
    if res.get("error"):
        return "\n".join([*lines, "FAILED:", res["error"]])
    lines.append("| step | wall s | peak RSS GB | estimate GB | where the time went |")
    lines.append("|---|---|---|---|---|")
    for step, rec in res["steps"].items():
        phases = rec.get("phases", {})
        shown = [(k, v["seconds"]) for k, v in phases.items()
                 if k != "total" and "inside" not in k and not k.startswith(STEP_PART_PREFIX)]  # fmt: skip
        top = sorted(shown, key=lambda kv: -kv[1])[:4]
        parts = ", ".join(f"{part} {s:.1f}" for part, s in step_parts(phases).items())
        est, peak = rec.get("memory_estimate_bytes"), rec.get("peak_rss_bytes")
        wall = f"{rec['seconds']:.1f}" if "seconds" in rec else f"(fit {phases.get(FIT, {}).get('seconds', 0):.1f})"
        cells = [step, wall, f"{peak / GB:.2f}" if peak else "– (earlier run)", f"{est / GB:.2f}" if est else "–",
                 ", ".join(f"{k} {v:.1f} s" + (f" ({parts})" if k == "training steps" and parts else "")
                           for k, v in top)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    for row in res.get("loader", []):
        lines.append(f"- data loader, {row['stage']}: {row['stream']}: {row['img_per_s_per_worker']:.2f} img/s/worker")
    evals = {k: v for step in res["steps"].values() for k, v in step.get("results", {}).items()}
    for name, r in evals.items():
        extra = "".join(f", {k} {v:.2f}" for k, v in r.items() if k.startswith("mIoU") and k != "mIoU")
        lines.append(f"- evaluated on {name}: mIoU {r['mIoU']:.2f}{extra} (random-init encoder, {name} fake data)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS))
    parser.add_argument("--scale", type=float, default=1.0, help="image-size factor (0.125 for the quick version)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per stage")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("DIGA_REHEARSAL_DIR", "/tmp/diga-rehearsal")))
    parser.add_argument("--in-process", action="store_true", help="run the steps in one process (no per-step peaks)")
    parser.add_argument("--resume", action="store_true",
                        help="keep an earlier rehearsal's finished steps (the pipeline skips them) instead of starting "
                             "afresh")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    data = args.work / f"data-{args.scale}"
    t = time.perf_counter()
    write_street_trees(data, args.scale)
    weights = write_weights(args.work / "weights")
    print(f"fake datasets and weights ready in {time.perf_counter() - t:.0f} s under {args.work}", flush=True)
    results, host = [], machine()  # the machine once: it does not change between experiments
    out = Path(__file__).parent / "results" / f"rehearsal-{platform.node()}-{time.strftime('%Y%m%d-%H%M')}.json"
    out.parent.mkdir(exist_ok=True)
    for name in args.experiments.split(","):
        res = run_pipeline(name, args.work, data, weights, args.steps, args.scale, isolate=not args.in_process,
                           resume=args.resume)  # fmt: skip
        if not res.get("error"):
            res["loader"] = loader_throughput(name, data, weights, args.scale)
        results.append(res)
        print(report(res), flush=True)
        # after every experiment: a rehearsal of hours that is stopped keeps what it measured
        out.write_text(json.dumps({"scale": args.scale, "steps": args.steps, "cpu_count": os.cpu_count(),
                                   "machine": host, "results": results}, indent=1))  # fmt: skip
    print(f"wrote {out}")
    if any(r.get("error") for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
