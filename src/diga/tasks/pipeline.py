"""Stage `pipeline`: a method's whole schedule in one run directory, resumable.

The steps are the method's recipe (`stage.method`, `diga.pipelines`; DiGA's: source-only baseline → translator →
warm-up → pseudo-labels → centroids → self-training → refinement rounds → target-supervised upper bound), laid
out by `diga.tasks.pipeline_plan`; one table at the end (`diga.tasks.pipeline_report`).

Every sub-stage runs in `<run dir>/<NN>_<name>/` with its own composed config (the pipeline's command-line
overrides + the wiring to earlier outputs, named by `diga.utils.artifacts`). A finished sub-stage leaves
`DONE.json` (atomic, holding the metrics its task returned) and is skipped when the pipeline is started again
with the same `run_id`; an interrupted training sub-stage resumes from its last checkpoint; the pseudo-label stage
resumes image by image. Under multi-process DDP (`trainer=ddp`) every rank runs the same plan (each stage
synchronises its ranks); rank 0 writes the markers and the summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning_fabric.utilities.rank_zero import rank_zero_only  # sets rank_zero_only.rank
from omegaconf import DictConfig

from diga.callbacks.preemption import SIGTERM_EXIT_CODE, StageInterrupted
from diga.config import compose_step
from diga.tasks.pipeline_plan import Step, extra_overrides, plan, step_overrides
from diga.tasks.pipeline_report import write_report
from diga.tasks.step_cache import link_into_run, step_lock
from diga.utils.artifacts import FINAL_MODEL, PIPELINE_PROFILE
from diga.utils.hydra import to_plain
from diga.utils.io import atomic_write_bytes
from diga.utils.memory import current_rss_bytes, peak_rss_bytes, release_memory

log = logging.getLogger(__name__)
RunTask = Callable[[DictConfig], dict[str, Any]]


def _base_overrides() -> list[str]:
    """The pipeline's own command-line overrides, minus what the pipeline sets per sub-stage."""
    try:
        overrides = HydraConfig.get().overrides
        # users' own config folders (hydra.searchpath): every sub-stage must find their experiments too
        searchpath = [o for o in overrides.hydra if o.lstrip("+~").startswith("hydra.searchpath")]
        task = [*searchpath, *overrides.task]
    except ValueError as e:  # composed without Hydra's runtime: the sub-stages would silently lose the overrides
        raise RuntimeError(
            "stage=pipeline needs the Hydra runtime config to recompose its sub-stages: run it with "
            "`python -m diga.train … stage=pipeline` or compose with diga.config.compose_config(overrides)"
        ) from e
    skip = ("stage=", "stage.", "paths.output_dir=", "ckpt_path=", "hydra.", "ablation=", "pipeline_step=")
    keep = ("hydra.searchpath",)
    return [o for o in task if o.lstrip("+~").startswith(keep) or not o.lstrip("+~").startswith(skip)]


def compose_planned(step: Step, base: list[str], extra: list[str]) -> DictConfig:
    """The composed config of one planned step."""
    return compose_step(step_overrides(step, base, extra))


def step_configs(cfg: DictConfig) -> list[tuple[Step, DictConfig]]:
    """Every sub-stage with its composed config (without resume overrides): for checks before anything runs."""
    base = _base_overrides()
    per_step = to_plain(cfg.stage.get("step_overrides")) or {}
    return [(s, compose_planned(s, base, extra_overrides(per_step, s.name, s.stage)))
            for s in plan(cfg, Path(cfg.paths.output_dir), base, per_step)]  # fmt: skip


def run_in_subprocess(step: Step, overrides: list[str]) -> tuple[dict[str, Any], int]:
    """`python -m diga.train OVERRIDES` for one sub-stage in a fresh process → (its metrics, its peak RSS in bytes).

    A fresh process per stage returns all memory between stages and measures each stage's peak on its own.
    """
    import os
    import signal
    import subprocess
    import sys
    import threading

    cmd = [sys.executable, "-m", "diga.train", *overrides, f"hydra.run.dir={step.out.root}"]
    proc = subprocess.Popen(cmd)
    # a SIGTERM to the pipeline (preemption, `docker stop`) reaches the step, which checkpoints and exits 143
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, _: proc.send_signal(signum)) if main_thread else None
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    code = os.waitstatus_to_exitcode(status)
    if code in (SIGTERM_EXIT_CODE, -signal.SIGTERM):  # checkpointed, or ended before training began
        last = step.out.last_checkpoint
        raise StageInterrupted(step.stage, None, last if last.is_file() else None)
    if code != 0:
        why = " (killed: out of memory?)" if code == -9 else ""
        raise RuntimeError(f"pipeline step {step.name} (stage={step.stage}) exited with {code}{why}: {' '.join(cmd)}")
    return json.loads(step.out.metrics.read_text()), int(usage.ru_maxrss) * 1024


def _run_step(step: Step, base: list[str], per_step: dict[str, list[str]], isolate: bool,
              profile: dict[str, dict[str, Any]], run_task: RunTask) -> dict[str, Any]:  # fmt: skip
    """Run one sub-stage (or read the metrics of a finished one)."""
    import time

    if step.out.done.is_file():
        log.info("pipeline: %s already done, skipping", step.name)
        if step.name not in profile and step.out.timings.is_file():  # done before the profile was kept per step
            profile[step.name] = {"stage": step.stage, "phases": json.loads(step.out.timings.read_text())}
        return json.loads(step.out.done.read_text())
    extra = extra_overrides(per_step, step.name, step.stage)
    if any(step.out.last_checkpoint.parent.glob("*.ckpt")):  # `last`: a damaged last.ckpt falls back to an intact one
        extra.append("ckpt_path=last")
        log.info("pipeline: resuming %s from its last checkpoint", step.name)
    log.info("pipeline: running %s (stage=%s) in %s", step.name, step.stage, step.out.root)
    t = time.perf_counter()
    if isolate:
        metrics, peak = run_in_subprocess(step, step_overrides(step, base, extra))
    else:
        metrics, peak = run_task(compose_planned(step, base, extra)), peak_rss_bytes()
        release_memory()  # the next step's memory check sees what this one no longer holds
    profile[step.name] = {"stage": step.stage, "seconds": round(time.perf_counter() - t, 2),
                          "peak_rss_bytes": peak, "peak_is_per_step": isolate,
                          "rss_after_bytes": None if isolate else current_rss_bytes()}  # fmt: skip
    if step.out.timings.is_file():
        profile[step.name]["phases"] = json.loads(step.out.timings.read_text())
    if rank_zero_only.rank == 0:
        atomic_write_bytes(step.out.done, json.dumps(metrics, indent=1).encode())
    return metrics


def link_final_model(root: Path, model: Path) -> None:
    """`<run>/final_model.pt`: a relative link to the model the pipeline hands on (its last adapted step), so
    `diga.predict` and `diga.evaluate` take the run folder's model without knowing the step names."""
    link, tmp = root / FINAL_MODEL, root / f".{FINAL_MODEL}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(model, root))
    os.replace(tmp, link)


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    from diga.tasks import run_task

    root = Path(cfg.paths.output_dir)
    base = _base_overrides()
    per_step = to_plain(cfg.stage.get("step_overrides")) or {}
    isolate = bool(cfg.stage.get("isolate_steps", False))
    rows: dict[str, dict[str, dict[str, float]]] = {}
    models: dict[str, Path] = {}
    # kept after every step, so a resumed (or killed) pipeline still reports the steps it ran earlier
    profile_file = root / PIPELINE_PROFILE
    profile: dict[str, dict[str, Any]] = json.loads(profile_file.read_text()) if profile_file.is_file() else {}
    steps = plan(cfg, root, base, per_step)
    for step in steps:
        if step.link is not None and rank_zero_only.rank == 0:
            link_into_run(step)
        lock = step_lock(step) if step.link is not None else contextlib.nullcontext()
        with lock:
            metrics = _run_step(step, base, per_step, isolate, profile, run_task)
        if step.row:
            rows[step.row] = metrics.get("results", {})
            models[step.row] = step.out.final_model
        if profile and rank_zero_only.rank == 0:
            atomic_write_bytes(profile_file, json.dumps(profile, indent=1).encode())
    summary = {f"{row}/{name}": r["mIoU"] for row, sets in rows.items() for name, r in sets.items()}
    # the headline is the model the pipeline hands on: the last adapted row (a refinement round when there is one)
    adapted = [s.row for s in steps if s.adapted and s.row in rows]
    last_row = adapted[-1] if adapted else None
    summary["mIoU"] = next(iter(rows[last_row].values()), {}).get("mIoU", float("nan")) if last_row else float("nan")
    if rank_zero_only.rank != 0:  # under multi-process DDP every rank runs the plan; one writes the summary
        return summary
    if last_row and models.get(last_row, Path()).is_file():
        link_final_model(root, models[last_row])
    write_report(cfg, root, rows, models)
    return summary
