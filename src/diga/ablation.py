"""`python -m diga.ablation SWEEP_DIR [SWEEP_DIR …]` — the table of an ablation sweep (`make ablation`).

The sweep is a Hydra multirun of `stage=pipeline` over the rows in conf/ablation/ and over seeds; every job's
pipeline writes its per-stage results. This collects them: per row, the mean ± sample std over seeds of the target
mIoU (of the first validation set, or `--set`), the per-seed values, and the per-class IoU means; written as
`ablation.csv`, `ablation.md`, `ablation_per_class.csv` and `ablation.png` into the sweep directory — and, for the
self-training rows, `ablation_pseudo_labels.csv`: per class, the fraction of the offline pseudo-label's pixels of
that class the selection kept, and the precision of what it kept (from the self-training step's CSV log; the
precision uses the toy's diagnosis labels, never a training input).

Seeds run at different times (one sweep per seed, another day, another cluster) are several sweep directories:
their jobs are pooled (rows in the order they first appear) and the table goes to `--out` (default: the first).
A row with the same seed in two jobs is an error that names both, so no result is silently replaced.

`--keep DIR` copies what the table reads of every finished job (its config, per-stage results, per-class IoU, the
self-training steps' CSV logs, env.json) into DIR as a sweep directory of its own, a few kB per job instead of the
checkpoints: DIR can be committed, and a sweep that takes several days pools it with the next day's jobs
(`python -m diga.ablation logs/…/multirun/<run_id> --keep DIR` adds the new ones and writes the table of all into
DIR).
"""

from __future__ import annotations

import argparse
import csv as csvlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from diga.evaluation.figures import save_figure
from diga.evaluation.tables import csv_table, markdown_table
from diga.utils.io import atomic_write_bytes


def job_dirs(sweeps: list[Path]) -> list[Path]:
    """Every job directory of the sweeps (finished or not), in sweep order then Hydra's job number."""
    jobs = []
    for sweep in sweeps:
        found = [p.parent.parent for p in sweep.glob("*/.hydra/config.yaml") if p.parent.parent.name.isdigit()]
        jobs += sorted(found, key=lambda j: int(j.name))
    return jobs


def collect(sweeps: list[Path], val_set: str | None = None) -> dict[str, dict[str, Any]]:
    """{row: {"seeds": {seed: mIoU}, "per_class": {seed: {class: IoU}}, "jobs": {seed: job dir}}}, in first-seen
    order."""
    rows: dict[str, dict[str, Any]] = {}
    for job in job_dirs(sweeps):
        cfg_path = job / ".hydra" / "config.yaml"
        cfg = OmegaConf.load(cfg_path)
        spec = cfg.get("ablation_row")
        results, per_class = job / "pipeline_results.json", job / "pipeline_per_class.json"
        if spec is None or not results.is_file():
            continue
        stages, classes = json.loads(results.read_text()), json.loads(per_class.read_text())
        for label, stage_row in spec.report.items():
            if stage_row not in stages:
                continue
            name = val_set or next(iter(stages[stage_row]))
            entry = rows.setdefault(str(label), {"seeds": {}, "per_class": {}, "jobs": {}, "pseudo_labels": {}})
            seed = int(cfg.seed)
            if seed in entry["jobs"]:
                raise SystemExit(f"ablation row {label!r}, seed {seed}: two results, {entry['jobs'][seed]} and "
                                 f"{job}; pass each seed's sweep once")  # fmt: skip
            entry["seeds"][seed] = stages[stage_row][name]
            entry["per_class"][seed] = classes.get(name, {}).get(stage_row, {})
            entry["jobs"][seed] = job
            if stats := pseudo_label_stats(job, stage_row):
                entry["pseudo_labels"][seed] = stats
    return rows


RECORD = (
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    "pipeline_results.json",
    "pipeline_per_class.json",
    "env.json",
)  # what a kept job holds, beside its self-training steps' CSV logs


def _identity(job: Path) -> tuple[str, str, int]:
    """(experiment, row, seed): what makes two jobs the same measurement."""
    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    row = cfg.get("ablation_row")
    return str(cfg.get("experiment_name", "")), (str(row.name) if row is not None else ""), int(cfg.seed)


def keep(sweeps: list[Path], dest: Path) -> list[Path]:
    """Copy the record of every finished job of `sweeps` into `dest/<n>/` (n after dest's own jobs). A job dest
    already holds (same row and seed, same results) is not copied again; the same row and seed with other results
    is an error that names both. Returns the new job folders."""
    dest.mkdir(parents=True, exist_ok=True)
    own = job_dirs([dest])
    held = {_identity(j): j for j in own if (j / "pipeline_results.json").is_file()}
    number = max((int(j.name) for j in own), default=-1) + 1
    added = []
    for job in job_dirs(sweeps):
        results = job / "pipeline_results.json"
        if not results.is_file() or job.resolve().parent == dest.resolve():
            continue
        if (twin := held.get(_identity(job))) is not None:
            if (twin / "pipeline_results.json").read_text() != results.read_text():
                raise SystemExit(f"{job} and {twin}: the same ablation row and seed with different results")
            continue
        target, staging = dest / str(number), dest / f".{number}.partial"  # a half copy is not a job the table reads
        shutil.rmtree(staging, ignore_errors=True)
        logs = [p.relative_to(job) for pattern in PSEUDO_LABEL_STEPS.values()
                for p in sorted(job.glob(f"{pattern}/csv/metrics.csv"))]  # fmt: skip
        for rel in (*map(Path, RECORD), *logs):
            if (job / rel).is_file():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(job / rel, staging / rel)
        staging.rename(target)
        held[_identity(job)] = target
        added.append(target)
        number += 1
    return added


LABELLED = "labelled (all pixels)"  # the column of the fraction of all target pixels that carry a selected label
PSEUDO_LABEL_STEPS = {"self-training": "[0-9][0-9]_selftrain", "refinement 1": "[0-9][0-9]_selftrain_r2"}


def pseudo_label_stats(job: Path, stage_row: str) -> dict[str, dict[str, float]]:
    """{"kept" | "precision": {class: mean over the stage's logged steps}} of the self-training step behind
    `stage_row` (its CSV log), or {} when the row is not a self-training one or the step kept no log. `kept` also
    holds LABELLED: the fraction of all target pixels with a selected label.

    Precision is measured against the target labels the toy keeps for diagnosis; a class with no pseudo-labelled
    pixel in a step logs nothing for it, so a class missing here never received a pseudo-label."""
    pattern = PSEUDO_LABEL_STEPS.get(stage_row)
    logs = sorted(job.glob(f"{pattern}/csv/metrics.csv")) if pattern else []
    if not logs:
        return {}
    with logs[0].open() as f:
        records = list(csvlib.DictReader(f))
    columns = list(records[0]) if records else []
    out: dict[str, dict[str, float]] = {"kept": {}, "precision": {}}
    for kind in out:
        prefix = f"train/pl_{kind}/"
        for key in (k for k in columns if k.startswith(prefix)):
            if (m := _column_mean(records, key)) is not None:
                out[kind][key[len(prefix) :]] = m
    # of all target pixels: also what a threshold applied when the pseudo-labels were written removed
    if (coverage := _column_mean(records, "train/pl_kept")) is not None:
        out["kept"][LABELLED] = coverage
    return out


def _column_mean(records: list[dict[str, str]], key: str) -> float | None:
    """Mean of a CSV log column over the rows that logged it (Lightning leaves the other rows' cells empty)."""
    vals = [float(r[key]) for r in records if r.get(key) not in (None, "")]
    return sum(vals) / len(vals) if vals else None


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else float("nan")
    return m, s


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    seeds = sorted({s for r in rows.values() for s in r["seeds"]})
    table = [["row", "mIoU (mean ± std)", *(f"seed {s}" for s in seeds)]]
    for name, r in rows.items():
        m, s = mean_std(list(r["seeds"].values()))
        spread = f"{m:.2f} ± {s:.2f}" if not math.isnan(s) else f"{m:.2f} (one seed)"
        table.append([name, spread, *(f"{r['seeds'][k]:.2f}" if k in r["seeds"] else "–" for k in seeds)])
    return markdown_table(table)


def seeds_csv(rows: dict[str, dict[str, Any]]) -> str:
    """mIoU per row: mean, std and each seed (a seed the row lacks is an empty cell: every column is one seed's)."""
    seeds = sorted({k for r in rows.values() for k in r["seeds"]})
    table = [["row", "mean", "std", *(f"seed{s}" for s in seeds)]]
    for name, r in rows.items():
        m, s = mean_std(list(r["seeds"].values()))
        table.append([f'"{name}"', f"{m:.4f}", f"{s:.4f}", *(f"{r['seeds'][k]:.4f}" if k in r["seeds"] else ""
                                                            for k in seeds)])  # fmt: skip
    return csv_table(table)


def per_class_csv(rows: dict[str, dict[str, Any]]) -> str:
    classes = list(next((pc for r in rows.values() for pc in r["per_class"].values() if pc), {}))
    table = [["row", *classes]]
    for name, r in rows.items():
        means = []
        for c in classes:
            vals = [pc[c] for pc in r["per_class"].values() if c in pc and not math.isnan(pc[c])]
            means.append(f"{sum(vals) / len(vals):.2f}" if vals else "nan")
        table.append([f'"{name}"', *means])
    return csv_table(table)


def pseudo_label_csv(rows: dict[str, dict[str, Any]]) -> str | None:
    """Per self-training row and class: kept-pixel fraction and pseudo-label precision, means over the seeds."""
    rows = {k: r for k, r in rows.items() if r["pseudo_labels"]}
    if not rows:
        return None
    iou_order = [c for r in rows.values() for pc in r["per_class"].values() for c in pc]  # the label set's order
    seen = {c for r in rows.values() for st in r["pseudo_labels"].values() for k in st.values() for c in k}
    classes = [c for c in dict.fromkeys(iou_order) if c in seen] + sorted(seen - set(iou_order))
    table = [["row", "measure", *classes]]
    for name, r in rows.items():
        for kind in ("kept", "precision"):
            cells = []
            for c in classes:
                vals = [st[kind][c] for st in r["pseudo_labels"].values() if c in st[kind]]
                cells.append(f"{sum(vals) / len(vals):.3f}" if vals else "")
            table.append([f'"{name}"', kind, *cells])
    return csv_table(table)


def plot(rows: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    stats = [mean_std(list(r["seeds"].values())) for r in rows.values()]
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.42 * len(names)))
    y = list(range(len(names)))[::-1]
    spreads = [0.0 if math.isnan(s) else s for _, s in stats]
    ax.barh(y, [m for m, _ in stats], xerr=spreads, color="#3b7dd8", capsize=3)
    for yi, (m, _), s in zip(y, stats, spreads):  # the value right of the error bar, not on it
        ax.text(m + s + 0.8, yi, f"{m:.1f}", va="center", fontsize=8)
    ax.set_xlim(0, max((m + s for (m, _), s in zip(stats, spreads)), default=0.0) * 1.12 or 1.0)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel("target mIoU (%), mean ± std over seeds")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def write(sweeps: Path | list[Path], val_set: str | None = None, out: Path | None = None) -> dict[str, dict[str, Any]]:
    sweeps = [sweeps] if isinstance(sweeps, Path) else list(sweeps)
    rows = collect(sweeps, val_set)
    if not rows:
        raise SystemExit(f"{', '.join(map(str, sweeps))}: no finished ablation jobs (expected "
                         "<job>/.hydra/config.yaml with ablation_row and <job>/pipeline_results.json)")  # fmt: skip
    sweep = out or sweeps[0]
    sweep.mkdir(parents=True, exist_ok=True)
    md = markdown(rows)
    atomic_write_bytes(sweep / "ablation.md", md.encode())
    atomic_write_bytes(sweep / "ablation.csv", seeds_csv(rows).encode())
    atomic_write_bytes(sweep / "ablation_per_class.csv", per_class_csv(rows).encode())
    if (pl := pseudo_label_csv(rows)) is not None:
        atomic_write_bytes(sweep / "ablation_pseudo_labels.csv", pl.encode())
    plot(rows, sweep / "ablation.png", f"ablation ({', '.join(s.name for s in sweeps)})")
    print(md)
    extra = ", ablation_pseudo_labels.csv" if pl is not None else ""
    print(f"wrote {sweep / 'ablation.md'}, ablation.csv, ablation_per_class.csv{extra}, ablation.png")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", type=Path, nargs="+",
                        help="multirun directories (logs/train/<experiment>/multirun/<run_id>), pooled")  # fmt: skip
    parser.add_argument("--set", dest="val_set", default=None, help="validation set (default: the first)")
    parser.add_argument("--out", type=Path, default=None, help="where the table goes (default: the first sweep)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy every finished job's record (no checkpoints) into this sweep directory, to commit "
                             "it and pool it with later jobs")  # fmt: skip
    args = parser.parse_args()
    if args.keep is None:
        write(args.sweeps, args.val_set, args.out)
        return
    added = keep(args.sweeps, args.keep)
    print(f"kept {len(added)} new finished job(s) in {args.keep}")
    write(args.keep, args.val_set, args.out or args.keep)  # the kept folder now holds every finished job


if __name__ == "__main__":
    main()
