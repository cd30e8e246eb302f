"""`make gpu-smoke` / `python -m benchmarks.gpu_smoke` — every stage of the toy pipeline on CUDA, in each precision.

What a first run on a GPU machine must show before anyone trains for days, in a few minutes on one GPU:

* every stage — translator, warm-up (with the learned translator), pseudo-labels (plain and class-wise), centroids,
  self-training, DAFormer + MIC + feature distance, source-only — in fp32, bf16-mixed and 16-mixed: runs, ends with
  finite weights, and reports its speed, its peak GPU memory beside diga's pre-flight estimate, and the host
  synchronisations per training step (CUDA's own count, `torch.cuda.set_sync_debug_mode`) against the budget the CPU
  test suite holds;
* activation checkpointing with channels-last; sliding-window inference (all windows against whole-image inference
  of the same model); `trainer.deterministic=warn` twice (are the weights bit-identical?);
* with two or more GPUs: `trainer=ddp` over NCCL, and its validation (an odd-sized set, sharded) against the same
  model evaluated on one GPU.

Writes `gpu_smoke.json` and `gpu_smoke.md` (one table) to `--out` and exits 1 if any check failed. Runs on the toy
pair at a reduced size (rendered into `--work` on first use). Nothing here runs without a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from diga.callbacks.host_syncs import CountStepSyncs

GB = 1024**3
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
STEPS = 30
SYNC_WINDOW = (2, 7)  # training steps whose synchronisations are counted (no logging step among them)
# the CPU suite's budget of host reads per training step (tests/integration/test_host_syncs.py): one non-finite
# check per optimiser step; under 16-mixed the GradScaler reads its inf flag once more per optimiser step
OPTIMISERS = {"translator": 2}
TOY = ("{height:80,width:160,source_train:64,source_val:16,target_train:64,target_val:17,seed:0,"
       "instance_colors:varied}")  # fmt: skip
MIC = "stage.module.masked_consistency={weight:1.0,mask_ratio:0.7,block_size:16}"


class StepProbe(CountStepSyncs):
    """Added to a smoke run through the config (`+callbacks.smoke_probe`): peak GPU memory of the fit, and the host
    synchronisations of the training steps in `SYNC_WINDOW` — CUDA's own count and diga's Python-level count."""

    def __init__(self, out: str) -> None:
        super().__init__(range(*SYNC_WINDOW))
        self.out = out

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            cuda = torch.cuda.is_available()
            Path(self.out).write_text(json.dumps({
                "peak_allocated": torch.cuda.max_memory_allocated() if cuda else 0,
                "peak_reserved": torch.cuda.max_memory_reserved() if cuda else 0,
                "cuda_syncs": self.cuda_syncs, "host_reads": self.host_reads}))  # fmt: skip


def gpu_description() -> dict[str, Any]:
    if not torch.cuda.is_available():  # --cpu: a dry run of the script itself
        return {"gpu": "none (CPU dry run)", "gpus": 0, "memory_gb": 0, "capability": "-", "torch": torch.__version__,
                "cuda": None, "bf16": True}  # fmt: skip
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "gpus": torch.cuda.device_count(), "memory_gb": round(props.total_memory / GB, 1),
            "capability": f"{props.major}.{props.minor}", "torch": torch.__version__, "cuda": torch.version.cuda,
            "bf16": torch.cuda.is_bf16_supported(including_emulation=False)}  # fmt: skip


class Smoke:
    def __init__(self, work: Path, out: Path, device: str = "cuda", steps: int = STEPS) -> None:
        if steps < SYNC_WINDOW[1]:
            raise ValueError(f"--steps must be at least {SYNC_WINDOW[1]} (synchronisations are counted in steps "
                             f"{SYNC_WINDOW[0]}–{SYNC_WINDOW[1] - 1})")  # fmt: skip
        self.work, self.out, self.device, self.steps = work, out, torch.device(device), steps
        self.trained = work / "runs" / "32-true"  # the last precision whose stages ran (sliding-window inference)
        self.rows: list[dict[str, Any]] = []

    def base(self, run: Path, precision: str) -> list[str]:
        trainer = "trainer=gpu" if self.device.type == "cuda" else "trainer=cpu"
        return ["experiment=toy", trainer, f"trainer.precision={precision}", "trainer.benchmark=false",
                f"paths.root_dir={self.work}", f"paths.data_dir={self.work / 'data'}", f"paths.output_dir={run}",
                f"toy_spec={TOY}", f"val_every={self.steps}", f"ckpt_every={self.steps}", "log_images_every=0",
                "trainer.enable_progress_bar=false", "datamodule.num_workers=2", "logger=csv"]  # fmt: skip

    def record(self, precision: str, stage: str, fn: Any) -> dict[str, Any]:
        """Run one check; a crash is a failed row, not the end of the smoke."""
        row: dict[str, Any] = {"precision": precision, "stage": stage}
        start = time.perf_counter()
        try:
            row.update(fn() or {})
            row.setdefault("status", "ok")
        except Exception as e:  # the table shows every failure at once
            row.update(status="FAIL", error=f"{type(e).__name__}: {e}"[:400], traceback=traceback.format_exc()[-3000:])
        finally:
            from hydra.core.global_hydra import GlobalHydra

            GlobalHydra.instance().clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        row["wall_s"] = round(time.perf_counter() - start, 1)
        self.rows.append(row)
        print(f"[gpu-smoke] {precision:>10} {stage:<28} {row['status']}  {row.get('error', '')}", flush=True)
        return row

    def fit(self, run: Path, precision: str, stage: str, extra: list[str]) -> dict[str, Any]:
        """A training stage: finite weights, s/step, peak memory beside the estimate, synchronisations per step."""
        from diga.config import compose_config
        from diga.tasks import run_task
        from diga.tasks.fit import build_module, estimate_stage_memory

        probe = run / "probe.json"
        overrides = [*self.base(run, precision), f"stage={stage}", f"steps.{stage}={self.steps}", *extra,
                     f"+callbacks.smoke_probe={{_target_:benchmarks.gpu_smoke.StepProbe,out:'{probe}'}}"]  # fmt: skip
        cfg = compose_config(overrides)
        estimate = estimate_stage_memory(cfg, build_module(cfg))
        metrics = run_task(cfg)
        seen = json.loads(probe.read_text())
        timings = json.loads((run / "timings.json").read_text())
        steps = timings.get("training steps", {})
        optimisers = OPTIMISERS.get(stage, 1)
        budget = optimisers * (2 if precision == "16-mixed" else 1)
        syncs = max(seen["cuda_syncs"], default=0)
        row = {"s_per_step": steps.get("seconds", math.nan) / max(steps.get("count", 1), 1),
               "peak_gb": seen["peak_allocated"] / GB, "estimate_gb": estimate.total / GB,
               "cuda_syncs_per_step": syncs, "host_reads_per_step": max(seen["host_reads"], default=0),
               "sync_budget": budget, "mIoU": metrics.get("mIoU")}  # fmt: skip
        final = run / ("translator.pt" if stage == "translator" else "final_model.pt")
        state = torch.load(final, map_location="cpu", weights_only=True)
        tensors = state.get("state_dict", state) if stage != "translator" else {**state["enc_s"], **state["dec_s2t"]}
        if not all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point()):
            row.update(status="FAIL", error="non-finite weights after training")
        elif syncs > budget:
            row.update(status="over sync budget")
        return row

    def offline(self, run: Path, precision: str, stage: str, extra: list[str]) -> dict[str, Any]:
        from diga.config import compose_config
        from diga.tasks import run_task

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        metrics = run_task(compose_config([*self.base(run, precision), f"stage={stage}", *extra]))
        kept = metrics.get("kept_fraction")
        note = "predicts in fp32" + (f"; keeps {kept:.1%} of the pixels" if kept is not None else "")
        return {"peak_gb": torch.cuda.max_memory_allocated() / GB if cuda else math.nan, "note": note}

    def stages(self, precision: str) -> None:
        """The toy pipeline's stages in order, each reading the previous ones' outputs."""
        root = self.trained = self.work / "runs" / precision
        tr, wu, pl_dir, cen = root / "translator", root / "warmup", root / "pseudolabel", root / "centroids"
        self.record(precision, "source_only", lambda: self.fit(root / "source_only", precision, "source_only", []))
        self.record(precision, "translator", lambda: self.fit(tr, precision, "translator", []))
        self.record(
            precision,
            "warmup (learned translator)",
            lambda: self.fit(
                wu,
                precision,
                "warmup",
                ["stage.module.translator.kind=learned", f"stage.module.translator.checkpoint={tr / 'translator.pt'}"],
            ),
        )
        model = f"stage.init_from={wu / 'final_model.pt'}"
        self.record(precision, "pseudolabel", lambda: self.offline(pl_dir, precision, "pseudolabel", [model]))
        self.record(
            precision,
            "pseudolabel class-wise",
            lambda: self.offline(
                root / "pseudolabel_classwise",
                precision,
                "pseudolabel",
                [model, "stage.confidence_threshold=classwise"],
            ),
        )
        self.record(precision, "centroids", lambda: self.offline(cen, precision, "centroids", [model]))
        self.record(precision, "selftrain", lambda: self.fit(root / "selftrain", precision, "selftrain", [
            model, "stage.module.translator.kind=fourier", f"stage.pseudo_labels={pl_dir / 'pseudo_labels'}",
            f"stage.centroids={cen / 'centroids.pt'}"]))  # fmt: skip
        self.record(
            precision,
            "daformer + MIC + FD",
            lambda: self.fit(
                root / "daformer", precision, "daformer", [MIC, "stage.module.feature_distance.weight=0.005"]
            ),
        )

    def options(self, precision: str) -> None:
        root = self.work / "runs" / "options"
        self.record(precision, "warmup, checkpointing + channels_last", lambda: self.fit(
            root / "checkpointing", precision, "warmup", ["model.grad_checkpointing=true",
                                                          "stage.module.channels_last=true"]))  # fmt: skip
        self.record("32-true", "sliding-window inference", lambda: self.slide(self.trained))  # evaluation: fp32
        self.record("32-true", "deterministic=warn, twice", lambda: self.deterministic(root / "deterministic"))

    def slide(self, root: Path) -> dict[str, Any]:
        """All windows of an image in one batch (stride half the window) against whole-image inference."""
        from torch.utils.data import DataLoader

        from diga.data.datamodule import collate
        from diga.evaluate import evaluate
        from diga.evaluation.inference import InferenceConfig
        from diga.models.loading import load_segmentor

        model, label_set = load_segmentor(root / "source_only" / "final_model.pt")
        loader = DataLoader(self.val_set(root / "slide"), batch_size=4, collate_fn=collate)
        out: dict[str, Any] = {}
        for name, inf in (("whole", InferenceConfig()),
                          ("slide", InferenceConfig(mode="slide", crop_size=(64, 64), stride=(32, 32)))):  # fmt: skip
            self.synchronize()
            t = time.perf_counter()
            out[f"{name}_mIoU"] = evaluate(model, loader, label_set, inf, self.device)["mIoU"]
            self.synchronize()
            out[f"{name}_s"] = time.perf_counter() - t
        out["mIoU"] = out["slide_mIoU"]
        return out

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def val_set(self, run: Path) -> Any:
        """The toy validation set of the smoke's reduced pair (17 images: odd, for the DDP check)."""
        from diga.config import compose_config
        from diga.data.datamodule import DomainAdaptationDataModule
        from diga.utils.hydra import to_plain

        cfg = compose_config(self.base(run, "32-true"))
        return DomainAdaptationDataModule.build_eval_dataset(to_plain(cfg.datamodule.val.toy_target), "val")

    def deterministic(self, root: Path) -> dict[str, Any]:
        from diga.config import compose_config
        from diga.tasks import run_task

        states = []
        for run in ("a", "b"):
            run_task(compose_config([*self.base(root / run, "32-true"), "stage=source_only",
                                     f"steps.source_only={self.steps}", "trainer.deterministic=warn"]))  # fmt: skip
            states.append(
                torch.load(root / run / "final_model.pt", map_location="cpu", weights_only=True)["state_dict"]
            )
        gap = max((a - states[1][k]).abs().max().item() for k, a in states[0].items() if a.is_floating_point())
        return {"bit_identical": gap == 0.0, "largest_weight_difference": gap}

    def ddp(self) -> None:
        """`trainer=ddp` on every GPU (NCCL) in a subprocess (the DDP launcher re-runs its command line)."""
        n = torch.cuda.device_count()
        if n < 2:
            self.rows.append({"precision": "bf16-mixed", "stage": "DDP (NCCL)", "status": "skipped",
                              "error": f"{n} GPU: needs 2 or more"})  # fmt: skip
            return

        def run() -> dict[str, Any]:
            from torch.utils.data import DataLoader

            from diga.data.datamodule import collate
            from diga.evaluate import evaluate
            from diga.evaluation.inference import InferenceConfig
            from diga.models.loading import load_segmentor

            out = self.work / "runs" / "ddp"
            cmd = [sys.executable, "-m", "diga.train", *self.base(out, "bf16-mixed"), "stage=source_only",
                   f"steps.source_only={self.steps}", "trainer=ddp", f"trainer.devices={n}"]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if done.returncode:
                raise RuntimeError(done.stderr[-1500:])
            trained = json.loads((out / "results.json").read_text())["toy_target"]["mIoU"]
            model, label_set = load_segmentor(out / "final_model.pt")
            loader = DataLoader(self.val_set(out / "eval"), batch_size=8, collate_fn=collate)
            single = evaluate(model, loader, label_set, InferenceConfig(), self.device)["mIoU"]
            row = {"mIoU": trained, "one_gpu_mIoU": single, "gpus": n}
            if abs(trained - single) > 0.05:
                row.update(status="FAIL", error=f"DDP validation {trained:.3f} ≠ one GPU {single:.3f}")
            return row

        self.record("bf16-mixed", f"DDP (NCCL, {n} GPUs)", run)

    def markdown(self, env: dict[str, Any]) -> str:
        head = ["precision", "stage", "status", "s/step", "peak GB", "estimate GB", "host reads/step",
                "CUDA syncs/step (budget)", "mIoU", "wall s", "note"]  # fmt: skip
        lines = [f"GPU smoke on {env['gpu']} ×{env['gpus']} ({env['memory_gb']} GB, sm {env['capability']}), torch "
                 f"{env['torch']}, CUDA {env['cuda']}, bf16 {'yes' if env['bf16'] else 'no'}", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip

        def num(v: Any, fmt: str) -> str:
            return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

        for r in self.rows:
            syncs = "" if "cuda_syncs_per_step" not in r else f"{r['cuda_syncs_per_step']} ({r['sync_budget']})"
            note = r.get("error", r.get("note", ""))
            if "bit_identical" in r:
                note = f"bit-identical: {r['bit_identical']} (largest difference {r['largest_weight_difference']:.2e})"
            if "whole_mIoU" in r:
                note = f"whole {r['whole_mIoU']:.2f} in {r['whole_s']:.2f} s, slide in {r['slide_s']:.2f} s"
            if "one_gpu_mIoU" in r:
                note = f"one GPU evaluates the same model to {r['one_gpu_mIoU']:.2f}"
            lines.append("| " + " | ".join([r["precision"], r["stage"], r["status"], num(r.get("s_per_step"), ".4f"),
                                            num(r.get("peak_gb"), ".2f"), num(r.get("estimate_gb"), ".2f"),
                                            str(r.get("host_reads_per_step", "")), syncs,
                                            num(r.get("mIoU"), ".2f"), num(r.get("wall_s"), ".0f"),
                                            note.replace("|", "/")]) + " |")  # fmt: skip
        return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("logs/gpu_smoke"), help="where the JSON and table go")
    parser.add_argument("--work", type=Path, default=None, help="data and run folders (default: a temporary one)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated trainer.precision values")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps per stage")
    parser.add_argument("--cpu", action="store_true", help="a dry run of this script on the CPU (no GPU figures)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.cpu:
        raise SystemExit("gpu-smoke: no CUDA GPU is visible on this machine (--cpu: a dry run of the script)")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from diga.config import register_resolvers

    register_resolvers()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="diga-gpu-smoke-"))
    smoke, env = Smoke(work, args.out, "cpu" if args.cpu else "cuda", args.steps), gpu_description()
    started = time.perf_counter()
    for precision in args.precisions.split(","):
        if precision.startswith("bf16") and not env["bf16"]:
            smoke.rows.append({"precision": precision, "stage": "all", "status": "skipped",
                               "error": "this GPU has no bfloat16"})  # fmt: skip
            continue
        smoke.stages(precision)
    smoke.options("bf16-mixed" if env["bf16"] else "16-mixed")
    smoke.ddp()
    env["minutes"] = round((time.perf_counter() - started) / 60, 1)
    (args.out / "gpu_smoke.json").write_text(json.dumps({"environment": env, "rows": smoke.rows}, indent=1))
    table = smoke.markdown(env) + f"\n{env['minutes']} minutes in all.\n"
    (args.out / "gpu_smoke.md").write_text(table)
    print(table)
    failed = [r for r in smoke.rows if r["status"] == "FAIL"]
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
