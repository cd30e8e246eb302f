"""`python -m diga.evaluate ckpt=… data=…` — evaluate a checkpoint on a dataset split, print and save the table."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader

from diga.config import register_resolvers
from diga.data.datamodule import DomainAdaptationDataModule, inference_loader
from diga.data.labels import get_label_set
from diga.evaluation.inference import InferenceConfig, predict_logits
from diga.evaluation.metrics import SegMetric, format_table
from diga.models.loading import load_segmentor, resolve_device
from diga.models.segmentor import Segmentor
from diga.tasks.results import write_results
from diga.utils import environment
from diga.utils.hydra import to_plain
from diga.utils.progress import progress

log = logging.getLogger(__name__)
register_resolvers()


@torch.no_grad()
def evaluate(
    model: Segmentor, loader: DataLoader, label_set: str, inference: InferenceConfig, device: torch.device
) -> dict[str, float]:
    metric = SegMetric(get_label_set(label_set)).to(device)
    model.to(device).eval()
    inference = inference.for_device(device)
    for batch in progress(loader, len(loader), "evaluating"):  # seconds per image on a CPU: show how far it is
        x = batch["image"].to(device).float().div_(255)
        y = batch["label"].to(device)  # uint8: SegMetric widens it
        logits = predict_logits(model, x, inference, model.num_classes, out_size=y.shape[-2:])
        metric.update(logits.argmax(1), y)
    return metric.summary()


def run_evaluate(cfg: DictConfig) -> dict[str, float]:
    model, ckpt_label_set = load_segmentor(cfg.ckpt)
    with open_dict(cfg):
        if not cfg.get("label_set"):
            cfg.label_set = ckpt_label_set
    if get_label_set(cfg.label_set).num_classes != model.num_classes:
        raise ValueError(
            f"{cfg.ckpt}: model has {model.num_classes} classes, label set {cfg.label_set!r} has "
            f"{get_label_set(cfg.label_set).num_classes}"
        )
    data_cfg = to_plain(cfg.data)
    overrides = {"limit": cfg.limit} if cfg.limit else {}
    dataset = DomainAdaptationDataModule.build_eval_dataset(data_cfg, split_key=cfg.split, **overrides)
    loader = inference_loader(dataset, int(cfg.batch_size), int(cfg.num_workers))
    device = resolve_device(cfg.device)
    inf = InferenceConfig.from_config(cfg.inference)
    summary = evaluate(model, loader, cfg.label_set, inf, device)
    name = f"{_data_choice(data_cfg)}_{cfg.split}"
    out_dir = Path(cfg.output_dir or hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    labels = get_label_set(cfg.label_set)
    environment.write(out_dir, cfg)
    json_path, csv_path = write_results({name: summary}, labels, out_dir, stem=f"eval_{name}")
    print(format_table({name: summary}, labels))
    print(f"wrote {csv_path} and {json_path}")
    return summary


def _data_choice(data_cfg: dict[str, Any]) -> str:
    """The `data=` choice name when running under Hydra, else the dataset class name."""
    try:
        return str(hydra.core.hydra_config.HydraConfig.get().runtime.choices["data"])
    except (ValueError, KeyError):
        return str(data_cfg["_target_"]).rsplit(".", 1)[-1].lower()


def model_override_problem(cfg: DictConfig) -> str | None:
    """`model=…` has no meaning here: a checkpoint holds its own architecture, and building another one around its
    weights could only fail or silently mismatch."""
    if cfg.get("model") is None:
        return None
    return (f"diga.evaluate takes the model from its checkpoint (ckpt={cfg.get('ckpt', '???')}), which stores the "
            "architecture it was trained with: drop model=… (to evaluate another architecture, evaluate its own "
            "checkpoint)")  # fmt: skip


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    if problem := model_override_problem(cfg):
        print(f"diga: {problem}", file=sys.stderr)
        raise SystemExit(2)
    from diga.models.weights import WeightFileError

    try:
        return run_evaluate(cfg)["mIoU"]
    except WeightFileError as e:  # names the file and the problem: no stack trace needed
        print(f"diga: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
