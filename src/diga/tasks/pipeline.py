"""Stage `pipeline`: the whole method in one run directory, resumable.

source-only baseline → translator → warm-up → pseudo-labels → centroids → self-training (→ refinement rounds:
pseudo-labels from the latest model, self-training again) → target-supervised upper bound, then one table.

Every sub-stage runs in `<run dir>/<NN>_<name>/` with its own composed config (the pipeline's command-line
overrides + the wiring to earlier outputs, named by `diga.utils.artifacts`). A finished sub-stage leaves
`DONE.json` (atomic, holding the metrics its task returned) and is skipped when the pipeline is started again
with the same `run_id`; an interrupted training sub-stage resumes from its last checkpoint; the pseudo-label stage
resumes image by image. Under multi-process DDP (`trainer=ddp`) every rank runs the same plan (each stage
synchronises its ranks); rank 0 writes the markers and the summary.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from lightning_fabric.utilities.rank_zero import rank_zero_only  # sets rank_zero_only.rank
from omegaconf import DictConfig

from diga.tasks.config import compose_stage
from diga.utils.artifacts import PIPELINE_PER_CLASS, PIPELINE_PROFILE, PIPELINE_RESULTS, PREDICTIONS, StageOutputs
from diga.utils.hydra import to_plain
from diga.utils.io import atomic_write_bytes
from diga.utils.memory import current_rss_bytes, release_memory

log = logging.getLogger(__name__)


@dataclass
class Step:
    name: str  # directory / row name
    stage: str  # conf/stage/<stage>.yaml
    out: StageOutputs  # its run directory
    overrides: list[str] = field(default_factory=list)
    oracle: bool = False  # train on the target with its labels (upper bound)
    row: str | None = None  # label in the results table (None: not a table row)
    key: str = ""  # what the step computes: its overrides, with earlier steps' directories replaced by their keys
    link: Path | None = None  # `<run dir>/<NN>_<name>` when the step lives in the step cache


def step_key(stage: str, overrides: list[str], earlier: list[Step], oracle: bool) -> str:
    """A content key: same key ⇔ same computation (same stage, same overrides, same upstream steps)."""
    normalized = []
    for o in overrides:
        for s in earlier:
            o = o.replace(str(s.out.root), f"@{s.key}")
        normalized.append(o)
    blob = json.dumps({"stage": stage, "overrides": normalized, "oracle": oracle}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def plan(cfg: DictConfig, root: Path, base: list[str] | None = None,
         per_step: dict[str, list[str]] | None = None) -> list[Step]:  # fmt: skip
    """The sub-stages, each with its directory and the overrides that point its inputs at earlier outputs.

    With `stage.step_cache` every step lives in `<cache>/<name>-<key>` (linked from the run directory): runs that
    share steps — the rows of an ablation sweep — compute each shared step once.
    """
    st = cfg.stage
    steps: list[Step] = []
    cache = Path(st.step_cache) if st.get("step_cache") else None
    shared = [o for o in (base or []) if not o.lstrip("+~").startswith(NOT_PART_OF_A_STEP)]

    def add(name: str, stage: str, overrides: list[str] | None = None, oracle: bool = False, **kw: Any) -> StageOutputs:
        overrides = list(overrides or [])
        extra = list((per_step or {}).get(name, (per_step or {}).get(stage, [])))
        key = step_key(stage, [*shared, *overrides, *extra], steps, oracle)
        link = root / f"{len(steps):02d}_{name}"
        out = StageOutputs(cache / f"{name}-{key}" if cache else link)
        steps.append(Step(name, stage, out, overrides, oracle=oracle, key=key, link=link if cache else None, **kw))
        return out

    if st.baseline:
        add("source_only", "source_only", row="source-only")
    if st.get("method", "diga") == "daformer":  # a baseline method of the same harness: one self-training stage
        add("daformer", "daformer", row="DAFormer-style self-training")
        if st.oracle:
            add("target_supervised", "source_only", oracle=True, row="target-supervised (upper bound)")
        return steps
    tr = [f"stage.module.translator.kind={st.translator}"]
    if st.translator == "learned":
        tr.append(f"stage.module.translator.checkpoint={add('translator', 'translator').translator}")
    else:
        tr.append("stage.module.translator.checkpoint=null")
    model = add("warmup", "warmup", tr, row="warm-up").final_model
    if st.get("adaptation", True):
        pls = add("pseudolabel", "pseudolabel", [f"stage.init_from={model}"]).pseudo_labels
        centroids = add("centroids", "centroids", [f"stage.init_from={model}"]).centroids
        for r in range(int(st.refine_rounds) + 1):
            sfx = "" if r == 0 else f"_r{r + 1}"
            if r > 0:
                pls = add(f"pseudolabel{sfx}", "pseudolabel", [f"stage.init_from={model}"]).pseudo_labels
                if st.recompute_centroids_each_round:
                    centroids = add(f"centroids{sfx}", "centroids", [f"stage.init_from={model}"]).centroids
            wiring = [f"stage.init_from={model}", f"stage.pseudo_labels={pls}", f"stage.centroids={centroids}"]
            row = "self-training" if r == 0 else f"refinement {r}"
            model = add(f"selftrain{sfx}", "selftrain", [*tr, *wiring], row=row).final_model
    if st.oracle:
        add("target_supervised", "source_only", oracle=True, row="target-supervised (upper bound)")
    return steps


# command-line overrides that name a run, not what a step computes (left out of step keys)
NOT_PART_OF_A_STEP = ("run_id=", "ablation=", "paths.root_dir=", "paths.log_dir=", "trainer.enable_progress_bar=")


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
            "`python -m diga.train … stage=pipeline` or compose with diga.tasks.config.compose_config(overrides)"
        ) from e
    skip = ("stage=", "stage.", "paths.output_dir=", "ckpt_path=", "hydra.", "ablation=", "pipeline_step=")
    keep = ("hydra.searchpath",)
    return [o for o in task if o.lstrip("+~").startswith(keep) or not o.lstrip("+~").startswith(skip)]


def step_overrides(step: Step, base: list[str], extra: list[str]) -> list[str]:
    """The full override list of one sub-stage (what `python -m diga.train` would be given for it)."""
    oracle = ["datamodule.target_as_source=true"] if step.oracle else []  # target images with their labels
    return [*base, f"stage={step.stage}", *step.overrides, *oracle, *extra, f"paths.output_dir={step.out.root}",
            f"pipeline_step={step.name}"]  # fmt: skip


def compose_step(step: Step, base: list[str], extra: list[str]) -> DictConfig:
    return compose_stage(step_overrides(step, base, extra))


def step_configs(cfg: DictConfig) -> list[tuple[Step, DictConfig]]:
    """Every sub-stage with its composed config (without resume overrides): for checks before anything runs."""
    base = _base_overrides()
    per_step = to_plain(cfg.stage.get("step_overrides")) or {}
    return [(s, compose_step(s, base, list(per_step.get(s.name, per_step.get(s.stage, [])))))
            for s in plan(cfg, Path(cfg.paths.output_dir), base, per_step)]  # fmt: skip


def run_in_subprocess(step: Step, overrides: list[str]) -> tuple[dict[str, Any], int]:
    """`python -m diga.train OVERRIDES` for one sub-stage in a fresh process → (its metrics, its peak RSS in bytes).

    A fresh process per stage returns all memory between stages and measures each stage's peak on its own.
    """
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "diga.train", *overrides, f"hydra.run.dir={step.out.root}"]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        why = " (killed: out of memory?)" if code == -9 else ""
        raise RuntimeError(f"pipeline step {step.name} (stage={step.stage}) exited with {code}{why}: {' '.join(cmd)}")
    return json.loads(step.out.metrics.read_text()), int(usage.ru_maxrss) * 1024


def _run_step(step: Step, base: list[str], per_step: dict[str, list[str]], isolate: bool,
              profile: dict[str, dict[str, Any]], run_task: Any, peak_rss_bytes: Any) -> dict[str, Any]:  # fmt: skip
    """Run one sub-stage (or read the metrics of a finished one)."""
    import time

    if step.out.done.is_file():
        log.info("pipeline: %s already done, skipping", step.name)
        if step.name not in profile and step.out.timings.is_file():  # done before the profile was kept per step
            profile[step.name] = {"stage": step.stage, "phases": json.loads(step.out.timings.read_text())}
        return json.loads(step.out.done.read_text())
    extra = list(per_step.get(step.name, per_step.get(step.stage, [])))
    if step.out.last_checkpoint.is_file():
        extra.append(f"ckpt_path={step.out.last_checkpoint}")
        log.info("pipeline: resuming %s from its last checkpoint", step.name)
    log.info("pipeline: running %s (stage=%s) in %s", step.name, step.stage, step.out.root)
    t = time.perf_counter()
    if isolate:
        metrics, peak = run_in_subprocess(step, step_overrides(step, base, extra))
    else:
        metrics, peak = run_task(compose_step(step, base, extra)), peak_rss_bytes()
        release_memory()  # the next step's memory check sees what this one no longer holds
    profile[step.name] = {"stage": step.stage, "seconds": round(time.perf_counter() - t, 2),
                          "peak_rss_bytes": peak, "peak_is_per_step": isolate,
                          "rss_after_bytes": None if isolate else current_rss_bytes()}  # fmt: skip
    if step.out.timings.is_file():
        profile[step.name]["phases"] = json.loads(step.out.timings.read_text())
    if rank_zero_only.rank == 0:
        atomic_write_bytes(step.out.done, json.dumps(metrics, indent=1).encode())
    return metrics


def link_into_run(step: Step) -> None:
    """`<run dir>/<NN>_<name>` → the step's directory in the cache (what a reader of the run directory sees)."""
    assert step.link is not None
    step.out.root.mkdir(parents=True, exist_ok=True)
    if step.link.is_symlink() and step.link.resolve() == step.out.root.resolve():
        return
    if step.link.exists() or step.link.is_symlink():
        raise FileExistsError(f"{step.link}: exists and is not a link to the step cache entry {step.out.root}")
    step.link.parent.mkdir(parents=True, exist_ok=True)
    step.link.symlink_to(step.out.root, target_is_directory=True)


@contextlib.contextmanager
def step_lock(step: Step, poll_s: float = 10.0) -> Iterator[None]:
    """One process computes a cached step; others wait for it (a lock left by a dead process is taken over)."""
    import os
    import time

    lock = step.out.root.with_suffix(".lock")
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            if step.out.done.is_file():
                yield
                return
            try:
                owner = int(lock.read_text() or 0)
                os.kill(owner, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # its process is gone
                continue
            except PermissionError:
                pass
            log.info("pipeline: %s is being computed by process %s (%s); waiting", step.name, owner, lock)
            time.sleep(poll_s)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    from diga.tasks import run_task
    from diga.utils.memory import peak_rss_bytes

    root = Path(cfg.paths.output_dir)
    base = _base_overrides()
    per_step = to_plain(cfg.stage.get("step_overrides")) or {}
    isolate = bool(cfg.stage.get("isolate_steps", False))
    rows: dict[str, dict[str, dict[str, float]]] = {}
    models: dict[str, Path] = {}
    # kept after every step, so a resumed (or killed) pipeline still reports the steps it ran earlier
    profile_file = root / PIPELINE_PROFILE
    profile: dict[str, dict[str, Any]] = json.loads(profile_file.read_text()) if profile_file.is_file() else {}
    for step in plan(cfg, root, base, per_step):
        if step.link is not None and rank_zero_only.rank == 0:
            link_into_run(step)
        lock = step_lock(step) if step.link is not None else contextlib.nullcontext()
        with lock:
            metrics = _run_step(step, base, per_step, isolate, profile, run_task, peak_rss_bytes)
        if step.row:
            rows[step.row] = metrics.get("results", {})
            models[step.row] = step.out.final_model
        if profile and rank_zero_only.rank == 0:
            atomic_write_bytes(profile_file, json.dumps(profile, indent=1).encode())
    summary = {f"{row}/{name}": r["mIoU"] for row, sets in rows.items() for name, r in sets.items()}
    # the headline is the model the pipeline hands on: the last adapted row (a refinement round when there is one)
    adapted = [r for r in rows if r.startswith(("refinement", "self-training", "DAFormer", "warm-up"))]
    last_row = adapted[-1] if adapted else None
    summary["mIoU"] = next(iter(rows[last_row].values()), {}).get("mIoU", float("nan")) if last_row else float("nan")
    if rank_zero_only.rank != 0:  # under multi-process DDP every rank runs the plan; one writes the summary
        return summary
    miou_rows = {row: {name: r["mIoU"] for name, r in sets.items()} for row, sets in rows.items()}
    from diga.utils.environment import read_reference, summary_line

    table = format_pipeline_table(miou_rows)
    print(f"\n[{cfg.experiment_name} / pipeline] target mIoU per stage\n{table}\n{summary_line(read_reference(root))}")
    from diga.data.labels import get_label_set

    classes = get_label_set(cfg.label_set).classes
    per_class = per_class_rows(rows, classes)
    for name, table_rows in per_class.items():
        print(f"\nper-class IoU on {name}\n{format_class_table(table_rows, classes)}")
    atomic_write_bytes(root / f"{PIPELINE_RESULTS}.json", json.dumps(miou_rows, indent=1).encode())
    atomic_write_bytes(root / f"{PIPELINE_RESULTS}.csv", _csv(miou_rows).encode())
    atomic_write_bytes(root / f"{PIPELINE_PER_CLASS}.json", json.dumps(per_class, indent=1).encode())
    atomic_write_bytes(root / f"{PIPELINE_PER_CLASS}.csv", _class_csv(per_class, classes).encode())
    from diga.evaluation.report import plot_per_class

    plot_per_class(per_class, classes, root / f"{PIPELINE_PER_CLASS}.png", f"{cfg.experiment_name}: IoU per class")
    write_pictures(cfg, root, miou_rows, models)
    return summary


def write_pictures(cfg: DictConfig, root: Path, rows: dict[str, dict[str, float]], models: dict[str, Path],
                   num_images: int = 4) -> None:  # fmt: skip
    """`pipeline_results.png` (mIoU per stage) and `predictions.png` (the first val images, one column per stage)."""
    from diga.data.datamodule import DomainAdaptationDataModule, collate
    from diga.data.labels import get_label_set
    from diga.evaluation.inference import InferenceConfig
    from diga.evaluation.report import plot_results, prediction_grid
    from diga.models.loading import load_segmentor

    plot_results(rows, root / f"{PIPELINE_RESULTS}.png", f"{cfg.experiment_name}: target mIoU per stage")
    val_cfgs = to_plain(cfg.datamodule.val) or {}
    if not val_cfgs or not models:
        return
    dataset = DomainAdaptationDataModule.build_eval_dataset(next(iter(val_cfgs.values())), "val",
                                                            float(cfg.datamodule.get("scale", 1.0)))  # fmt: skip
    items = [dataset[i] for i in range(min(num_images, len(dataset)))]
    if len({tuple(it["image"].shape) for it in items}) != 1:
        return  # differently sized val images: no grid
    batch = collate(items)
    loaded = {row: load_segmentor(path)[0] for row, path in models.items()}
    prediction_grid(loaded, batch["image"].float() / 255, batch["label"], get_label_set(cfg.label_set),
                    root / PREDICTIONS, InferenceConfig.from_config(to_plain(cfg.get("inference")) or {}),
                    run_device(cfg))  # fmt: skip


def run_device(cfg: DictConfig) -> torch.device:
    """The device the run trains on (its first GPU when training on CUDA), for work done outside the trainer."""
    from diga.utils.accelerator import trains_on_cuda

    cuda = trains_on_cuda(cfg.trainer.get("accelerator", "cpu")) and torch.cuda.is_available()
    return torch.device("cuda" if cuda else "cpu")


def per_class_rows(rows: dict[str, dict[str, dict[str, float]]], classes: tuple[str, ...]
                   ) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """{validation set: {stage row: {class: IoU}}} from the per-stage results."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row, sets in rows.items():
        for name, r in sets.items():
            out.setdefault(name, {})[row] = {c: r.get(f"iou/{c}", float("nan")) for c in classes}
    return out


def format_class_table(rows: dict[str, dict[str, float]], classes: tuple[str, ...]) -> str:
    head = ["stage", *classes]
    body = [[row, *(f"{v.get(c, float('nan')):.1f}" for c in classes)] for row, v in rows.items()]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [head, *body])  # fmt: skip


def _class_csv(per_class: dict[str, dict[str, dict[str, float]]], classes: tuple[str, ...]) -> str:
    lines = ["set,stage," + ",".join(classes)]
    for name, rows in per_class.items():
        lines += [f"{name},{row}," + ",".join(f"{v[c]:.4f}" for c in classes) for row, v in rows.items()]
    return "\n".join(lines) + "\n"


def format_pipeline_table(rows: dict[str, dict[str, float]]) -> str:
    sets = sorted({s for r in rows.values() for s in r})
    head = ["stage", *[f"{s} mIoU" for s in sets]]
    body = [[row, *[f"{vals.get(s, float('nan')):.2f}" for s in sets]] for row, vals in rows.items()]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head, *body]]  # fmt: skip
    return "\n".join(lines)


def _csv(rows: dict[str, dict[str, float]]) -> str:
    sets = sorted({s for r in rows.values() for s in r})
    out = ["stage," + ",".join(sets)]
    out += [f"{row}," + ",".join(f"{vals.get(s, float('nan')):.4f}" for s in sets) for row, vals in rows.items()]
    return "\n".join(out) + "\n"
