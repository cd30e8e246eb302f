"""Writing evaluation results: JSON (all numbers) and CSV (per-class table), atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from diga.data.labels import LabelSet
from diga.utils.environment import read_reference
from diga.utils.io import atomic_write_bytes


def write_results(
    results: dict[str, dict[str, float]], labels: LabelSet, out_dir: str | Path, stem: str = "results"
) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    provenance = read_reference(out_dir)  # the run's env.json: versions, lock, commit, kernel path, config hash
    record = {**results, "provenance": provenance} if provenance else results
    atomic_write_bytes(json_path, json.dumps(record, indent=2, sort_keys=True).encode())
    buf = io.StringIO()
    writer = csv.writer(buf)
    names = list(results)
    writer.writerow(["metric", *names])
    keys = ["mIoU", *(s for s, _ in labels.subsets), "aAcc", "mAcc", "fwIoU", *(f"iou/{c}" for c in labels.classes)]
    for k in keys:
        writer.writerow([k, *(f"{results[n][k]:.4f}" for n in names)])
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    return json_path, csv_path
