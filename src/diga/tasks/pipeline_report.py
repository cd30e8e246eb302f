"""What `stage=pipeline` reports at the end: mIoU per stage and set, IoU per class, their CSVs and pictures."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from diga.evaluation.tables import csv_table, text_table
from diga.utils.artifacts import PIPELINE_PER_CLASS, PIPELINE_RESULTS, PREDICTIONS
from diga.utils.hydra import to_plain
from diga.utils.io import atomic_write_bytes


def write_pictures(cfg: DictConfig, root: Path, rows: dict[str, dict[str, float]], models: dict[str, Path],
                   num_images: int = 4) -> None:  # fmt: skip
    """`pipeline_results.png` (mIoU per stage) and `predictions.png` (the first val images, one column per stage;
    without a validation set, target training images spread over the set, without ground truth)."""
    from diga.data.datamodule import DomainAdaptationDataModule, collate, dataset_config
    from diga.data.labels import get_label_set
    from diga.evaluation.inference import InferenceConfig
    from diga.evaluation.report import plot_results, prediction_grid
    from diga.models.loading import load_segmentor

    plot_results(rows, root / f"{PIPELINE_RESULTS}.png", f"{cfg.experiment_name}: target mIoU per stage")
    val_cfgs = to_plain(cfg.datamodule.val) or {}
    target = dataset_config(to_plain(cfg.datamodule.get("target")))
    scale = float(cfg.datamodule.get("scale", 1.0))
    if not models or not (val_cfgs or (target is not None and cfg.get("target_previews"))):
        return
    if val_cfgs:
        dataset = DomainAdaptationDataModule.build_eval_dataset(next(iter(val_cfgs.values())), "val", scale)
        items = [dataset[i] for i in range(min(num_images, len(dataset)))]
    else:  # unlabelled target (your own images): the previews' images, each resized to the first one's size
        from diga.callbacks.target_previews import spaced_indices
        from diga.data.transforms import eval_transform

        dataset = DomainAdaptationDataModule.build_eval_dataset(target, "train", scale, with_labels=False)
        size = list(dataset[0]["image"].shape[-2:])
        dataset.transform = eval_transform(size)
        items = [dataset[i] for i in spaced_indices(len(dataset), num_images)]
    if len({tuple(it["image"].shape) for it in items}) != 1:
        return  # differently sized val images: no grid
    batch = collate(items)
    loaded = {row: load_segmentor(path)[0] for row, path in models.items()}
    labels = batch["label"] if val_cfgs else None
    inference = InferenceConfig.from_config(to_plain(cfg.get("inference")) or {})
    prediction_grid(loaded, batch["image"].float() / 255, labels, get_label_set(cfg.label_set), root / PREDICTIONS,
                    inference, run_device(cfg))  # fmt: skip


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
    body = [[row, *(f"{v.get(c, float('nan')):.1f}" for c in classes)] for row, v in rows.items()]
    return text_table([["stage", *classes], *body])


def class_csv(per_class: dict[str, dict[str, dict[str, float]]], classes: tuple[str, ...]) -> str:
    body = [
        [name, row, *(f"{v[c]:.4f}" for c in classes)] for name, rows in per_class.items() for row, v in rows.items()
    ]
    return csv_table([["set", "stage", *classes], *body])


def _sets(rows: dict[str, dict[str, float]]) -> list[str]:
    """Every set any row was scored on, in the order the runs report them (a pooled set or the headline first)."""
    return list(dict.fromkeys(s for r in rows.values() for s in r))


def format_pipeline_table(rows: dict[str, dict[str, float]]) -> str:
    sets = _sets(rows)
    body = [[row, *(f"{vals.get(s, float('nan')):.2f}" for s in sets)] for row, vals in rows.items()]
    return text_table([["stage", *(f"{s} mIoU" for s in sets)], *body])


def results_csv(rows: dict[str, dict[str, float]]) -> str:
    sets = _sets(rows)
    body = [[row, *(f"{vals.get(s, float('nan')):.4f}" for s in sets)] for row, vals in rows.items()]
    return csv_table([["stage", *sets], *body])


def write_report(cfg: DictConfig, root: Path, rows: dict[str, dict[str, dict[str, float]]],
                 models: dict[str, Path]) -> None:  # fmt: skip
    """Print the mIoU and per-class tables; write them as JSON, CSV and PNG, and the prediction pictures."""
    from diga.data.labels import get_label_set
    from diga.evaluation.report import plot_per_class
    from diga.utils.environment import read_reference, summary_line

    miou_rows = {row: {name: r["mIoU"] for name, r in sets.items()} for row, sets in rows.items()}
    table = format_pipeline_table(miou_rows)
    print(f"\n[{cfg.experiment_name} / pipeline] target mIoU per stage\n{table}\n{summary_line(read_reference(root))}")
    classes = get_label_set(cfg.label_set).classes
    per_class = per_class_rows(rows, classes)
    for name, table_rows in per_class.items():
        print(f"\nper-class IoU on {name}\n{format_class_table(table_rows, classes)}")
    atomic_write_bytes(root / f"{PIPELINE_RESULTS}.json", json.dumps(miou_rows, indent=1).encode())
    atomic_write_bytes(root / f"{PIPELINE_RESULTS}.csv", results_csv(miou_rows).encode())
    atomic_write_bytes(root / f"{PIPELINE_PER_CLASS}.json", json.dumps(per_class, indent=1).encode())
    atomic_write_bytes(root / f"{PIPELINE_PER_CLASS}.csv", class_csv(per_class, classes).encode())
    plot_per_class(per_class, classes, root / f"{PIPELINE_PER_CLASS}.png", f"{cfg.experiment_name}: IoU per class")
    write_pictures(cfg, root, miou_rows, models)
