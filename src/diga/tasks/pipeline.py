"""Stage `pipeline`: the whole method in one run directory, resumable.

source-only baseline → translator → warm-up → pseudo-labels → centroids → self-training (→ refinement rounds:
pseudo-labels from the latest model, self-training again) → target-supervised upper bound, then one table.

Every sub-stage runs in `<run dir>/<NN>_<name>/` with its own composed config (the pipeline's command-line
overrides + the wiring to earlier outputs). A finished sub-stage leaves `DONE.json` (atomic) and is skipped
when the pipeline is started again with the same `run_id`; an interrupted training sub-stage resumes from its
`checkpoints/last.ckpt`; the pseudo-label stage resumes image by image. Under multi-process DDP
(`trainer=ddp`) every rank runs the same plan (each stage synchronises its ranks); rank 0 writes the markers
and the summary.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning_utilities.core.rank_zero import rank_zero_only
from omegaconf import DictConfig, open_dict

from diga.data.io import atomic_write_bytes
from diga.utils.hydra import CONFIG_DIR, to_plain

log = logging.getLogger(__name__)
DONE = "DONE.json"


@dataclass
class Step:
    name: str  # directory / row name
    stage: str  # conf/stage/<stage>.yaml
    overrides: list[str] = field(default_factory=list)
    oracle: bool = False  # train on the target with its labels (upper bound)
    row: str | None = None  # label in the results table (None: not a table row)


def plan(cfg: DictConfig, root: Path) -> list[Step]:
    """The sub-stages and how each one's inputs point at earlier outputs."""
    st = cfg.stage
    d = {}
    steps: list[Step] = []

    def add(step: Step) -> Path:
        out = root / f"{len(steps):02d}_{step.name}"
        d[step.name] = out
        steps.append(step)
        return out

    if st.baseline:
        add(Step("source_only", "source_only", row="source-only"))
    tr_kind = st.translator
    tr = [f"translator.kind={tr_kind}"]
    if tr_kind == "learned":
        out = add(Step("translator", "translator"))
        tr.append(f"translator.checkpoint={out / 'translator.pt'}")
    warm = add(Step("warmup", "warmup", tr, row="warm-up"))
    model = warm / "final_model.pt"
    pl = add(Step("pseudolabel", "pseudolabel", [f"stage.init_from={model}"]))
    cen = add(Step("centroids", "centroids", [f"stage.init_from={model}"]))
    centroids = cen / "centroids.pt"
    for r in range(int(st.refine_rounds) + 1):
        sfx = "" if r == 0 else f"_r{r + 1}"
        if r > 0:
            pl = add(Step(f"pseudolabel{sfx}", "pseudolabel", [f"stage.init_from={model}"]))
            if st.recompute_centroids_each_round:
                centroids = add(Step(f"centroids{sfx}", "centroids", [f"stage.init_from={model}"])) / "centroids.pt"
        wiring = [f"stage.init_from={model}", f"pseudo_label_dir={pl / 'pseudo_labels'}", f"centroids_path={centroids}"]
        out = add(Step(f"selftrain{sfx}", "selftrain", [*tr, *wiring],
                       row="self-training" if r == 0 else f"refinement {r}"))  # fmt: skip
        model = out / "final_model.pt"
    if st.oracle:
        add(Step("target_supervised", "source_only", oracle=True, row="target-supervised (upper bound)"))
    return steps


def _base_overrides() -> list[str]:
    """The pipeline's own command-line overrides, minus what the pipeline sets per sub-stage."""
    try:
        task = list(HydraConfig.get().overrides.task)
    except ValueError as e:  # composed without Hydra's runtime: the sub-stages would silently lose the overrides
        raise RuntimeError(
            "stage=pipeline needs the Hydra runtime config to recompose its sub-stages: run it with "
            "`python -m diga.train … stage=pipeline` or compose with diga.utils.hydra.compose_config(overrides)"
        ) from e
    skip = ("stage=", "stage.", "paths.output_dir=", "ckpt_path=", "hydra.")
    return [o for o in task if not o.lstrip("+~").startswith(skip)]


def compose_step(step: Step, out_dir: Path, base: list[str], extra: list[str]) -> DictConfig:
    overrides = [*base, f"stage={step.stage}", *step.overrides, *extra, f"paths.output_dir={out_dir}"]
    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name="train", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    if step.oracle:
        with open_dict(cfg):
            cfg.datamodule.source = copy.deepcopy(cfg.datamodule.target)
            cfg.datamodule.source.loader.class_retry = False
            cfg.datamodule.use_target = False
    return cfg


def run_pipeline(cfg: DictConfig) -> dict[str, float]:
    from diga.tasks import run_task

    root = Path(cfg.paths.output_dir)
    base = _base_overrides()
    per_step = to_plain(cfg.stage.get("step_overrides")) or {}
    rows: dict[str, dict[str, float]] = {}
    models: dict[str, Path] = {}
    for i, step in enumerate(plan(cfg, root)):
        out = root / f"{i:02d}_{step.name}"
        done = out / DONE
        if done.is_file():
            metrics = json.loads(done.read_text())
            log.info("pipeline: %s already done, skipping", step.name)
        else:
            extra = list(per_step.get(step.name, per_step.get(step.stage, [])))
            if (out / "checkpoints" / "last.ckpt").is_file():
                extra.append(f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}")
                log.info("pipeline: resuming %s from its last checkpoint", step.name)
            log.info("pipeline: running %s (stage=%s) in %s", step.name, step.stage, out)
            metrics = run_task(compose_step(step, out, base, extra))
            if rank_zero_only.rank == 0:
                atomic_write_bytes(done, json.dumps(metrics, indent=1).encode())
        if step.row:
            results = json.loads((out / "results.json").read_text())
            rows[step.row] = {name: r["mIoU"] for name, r in results.items()}
            models[step.row] = out / "final_model.pt"
    summary = {f"{row}/{name}": v for row, sets in rows.items() for name, v in sets.items()} | {
        "mIoU": next(iter(rows.get("self-training", {}).values()), float("nan"))
    }
    if rank_zero_only.rank != 0:  # under multi-process DDP every rank runs the plan; one writes the summary
        return summary
    table = format_pipeline_table(rows)
    print(f"\n[{cfg.experiment_name} / pipeline] target mIoU per stage\n{table}")
    atomic_write_bytes(root / "pipeline_results.json", json.dumps(rows, indent=1).encode())
    atomic_write_bytes(root / "pipeline_results.csv", _csv(rows).encode())
    write_pictures(cfg, root, rows, models)
    print(f"results: {root / 'pipeline_results.csv'}, {root / 'pipeline_results.png'}, {root / 'predictions.png'}")
    return summary


def write_pictures(cfg: DictConfig, root: Path, rows: dict[str, dict[str, float]], models: dict[str, Path],
                   num_images: int = 4) -> None:  # fmt: skip
    """`pipeline_results.png` (mIoU per stage) and `predictions.png` (the first val images, one column per stage)."""
    from diga.data.datamodule import DomainAdaptationDataModule, collate
    from diga.data.labels import get_label_set
    from diga.evaluation.report import plot_results, prediction_grid
    from diga.models.checkpoint import load_segmentor

    plot_results(rows, root / "pipeline_results.png", f"{cfg.experiment_name}: target mIoU per stage")
    val_cfgs = to_plain(cfg.datamodule.val) or {}
    if not val_cfgs or not models:
        return
    dataset = DomainAdaptationDataModule.build_eval_dataset(next(iter(val_cfgs.values())))
    batch = collate([dataset[i] for i in range(min(num_images, len(dataset)))])
    images = batch["image"].float() / 255
    if len({tuple(dataset[i]["image"].shape) for i in range(min(num_images, len(dataset)))}) != 1:
        return  # differently sized val images: no grid
    loaded = {row: load_segmentor(path)[0] for row, path in models.items()}
    prediction_grid(loaded, images, batch["label"], get_label_set(cfg.label_set), root / "predictions.png")


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
