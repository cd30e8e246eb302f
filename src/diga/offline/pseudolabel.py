"""Stage `pseudolabel`: offline pseudo-labels for every target training image.

Streams one batch at a time and writes each palettised PNG atomically as soon as it is predicted (memory does not
grow with the dataset; the reference buffers a 50 GB float64 array). Files already present are skipped, so an
interrupted run resumes where it stopped; `manifest.json` is written last, by rank 0 after every process has
finished, and marks completion. Runs on the trainer's devices (`offline/launch.py`): each process takes every
world-size-th image.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning_fabric import Fabric
from omegaconf import DictConfig
from torch.utils.data import Subset

from diga.data.datamodule import inference_loader
from diga.data.io import save_label_png
from diga.data.labels import get_label_set
from diga.evaluation.inference import InferenceConfig, predict_logits
from diga.models.loading import load_segmentor
from diga.offline.launch import launch, shard, target_train_dataset
from diga.pseudo_labels import classwise_thresholds, confidence_threshold
from diga.utils.artifacts import PSEUDO_LABEL_MANIFEST as MANIFEST
from diga.utils.artifacts import PSEUDO_LABELS
from diga.utils.io import atomic_write_bytes
from diga.utils.progress import progress
from diga.utils.tensors import count_values

log = logging.getLogger(__name__)


def inference_config(cfg: DictConfig) -> InferenceConfig:
    return InferenceConfig.from_config(cfg.stage.inference)


def run_pseudolabel(cfg: DictConfig) -> dict[str, float]:
    if not cfg.stage.get("init_from"):
        raise ValueError("stage=pseudolabel needs stage.init_from (a warm-up or self-training final_model.pt)")
    return launch(cfg, _predict_and_write)


def class_thresholds(fabric: Fabric, cfg: DictConfig, model: torch.nn.Module, dataset: Any, mine: list[int],
                     inf: InferenceConfig, out_dir: Path, bins: int = 1000) -> torch.Tensor:  # fmt: skip
    """The class-wise baseline: a first pass over *all* target images (every process its share, histograms summed)
    finds per-class thresholds keeping `stage.class_keep_fraction` of each class's pixels; saved next to the labels so
    that a resumed run uses the same ones."""
    saved = out_dir / "class_thresholds.json"
    if saved.is_file():
        return torch.tensor(json.loads(saved.read_text())["thresholds"], device=fabric.device)
    hist = torch.zeros(model.num_classes, bins, dtype=torch.float64, device=fabric.device)
    loader = inference_loader(Subset(dataset, mine), int(cfg.stage.get("batch_size", 1)),
                              int(cfg.datamodule.num_workers))  # fmt: skip
    with torch.no_grad():
        for batch in progress(loader, len(loader), "class-wise thresholds", fabric.global_rank == 0):
            conf, label = F.softmax(predict_logits(model, batch["image"].to(fabric.device).float().div_(255), inf,
                                                   model.num_classes), 1).max(1)  # fmt: skip
            flat = label.flatten() * bins + (conf.flatten() * bins).long().clamp(max=bins - 1)
            hist += count_values(flat, model.num_classes * bins).view(model.num_classes, bins)
    hist = fabric.all_reduce(hist, reduce_op="sum")
    thresholds = classwise_thresholds(hist, float(cfg.stage.get("class_keep_fraction", 0.5)))
    if fabric.global_rank == 0:
        atomic_write_bytes(saved, json.dumps({"thresholds": thresholds.tolist()}, indent=1).encode())
    fabric.barrier()
    return thresholds


def _predict_and_write(fabric: Fabric, cfg: DictConfig) -> dict[str, float]:
    """One process's share of the images; rank 0 writes the manifest once every process has finished."""
    st = cfg.stage
    out_dir = Path(st.get("output_dir") or Path(cfg.paths.output_dir) / PSEUDO_LABELS)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, label_set = load_segmentor(st.init_from)
    palette = get_label_set(label_set).palette_bytes()
    model.to(fabric.device).eval()
    dataset = target_train_dataset(cfg)
    mine = shard(list(range(len(dataset))), fabric)
    todo = [i for i in mine if not (out_dir / f"{dataset.samples[i].name}.png").exists()]
    log.info("pseudo-labels: %d of %d images to predict into %s (rank %d of %d)", len(todo), len(dataset), out_dir,
             fabric.global_rank, fabric.world_size)  # fmt: skip
    loader = inference_loader(Subset(dataset, todo), int(st.get("batch_size", 1)), int(cfg.datamodule.num_workers))
    inf = inference_config(cfg).for_device(fabric.device)
    threshold = st.get("confidence_threshold")
    if threshold == "classwise":
        threshold = class_thresholds(fabric, cfg, model, dataset, mine, inf, out_dir)
    elif threshold is not None:
        threshold = float(threshold)
    counts = torch.zeros(2, dtype=torch.float64, device=fabric.device)  # kept pixels, all pixels
    with torch.no_grad():
        for batch in progress(loader, len(loader), "pseudo-labels", fabric.global_rank == 0):
            x = batch["image"].to(fabric.device).float().div_(255)
            logits = predict_logits(model, x, inf, model.num_classes)
            labels = (confidence_threshold(F.softmax(logits, 1), threshold) if threshold is not None
                      else logits.argmax(1))  # fmt: skip
            counts[0] += (labels != 255).sum()
            counts[1] += labels.numel()
            for name, lab in zip(batch["name"], labels.cpu().numpy()):
                save_label_png(out_dir / f"{name}.png", lab, palette)
    counts = fabric.all_reduce(counts, reduce_op="sum")
    fabric.barrier()  # every rank's files are on disk before the manifest marks the set complete
    # checked on every rank, so that all of them stop (a rank-0-only error would leave the others at a barrier)
    missing = [s.name for s in dataset.samples if not (out_dir / f"{s.name}.png").exists()]
    if missing:
        raise RuntimeError(f"{out_dir}: {len(missing)} pseudo-labels missing after all ranks finished "
                           f"(first: {missing[0]}.png); not writing {MANIFEST}")  # fmt: skip
    if fabric.global_rank == 0:
        thr = threshold.tolist() if isinstance(threshold, torch.Tensor) else threshold
        manifest = {"images": len(dataset), "model": str(st.init_from), "scales": list(inf.scales),
                    "fusion": inf.fusion, "confidence_threshold": thr}  # fmt: skip
        atomic_write_bytes(out_dir / MANIFEST, json.dumps(manifest, indent=1).encode())
    fabric.barrier()
    return {"kept_fraction": float(counts[0] / counts[1].clamp(min=1))}
