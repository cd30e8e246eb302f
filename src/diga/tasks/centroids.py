"""Stage `centroids`: initial class centroids from the warm-up model's own target predictions (METHOD.md §6).

Per target training image: features and logits at feature resolution, pseudo-label = argmax, per-class mean
feature where ≥ `min_pixels` pixels; the centroid is the mean of those per-image vectors. One pass, vectorised
(`class_mean_vectors`), written atomically to `centroids.pt`. On several processes (`tasks/offline.py`) each
sums its share of the images and the sums are all-reduced before rank 0 writes the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning_fabric import Fabric
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset

from diga.centroids import CentroidAccumulator, save_centroids
from diga.data.datamodule import collate
from diga.models.checkpoint import load_segmentor
from diga.tasks.offline import launch, shard
from diga.tasks.pseudolabel import target_train_dataset

log = logging.getLogger(__name__)
CENTROIDS_FILE = "centroids.pt"


def run_centroids(cfg: DictConfig) -> dict[str, float]:
    if not cfg.stage.get("init_from"):
        raise ValueError("stage=centroids needs stage.init_from (the warm-up final_model.pt)")
    return launch(cfg, _accumulate_and_save)


def _accumulate_and_save(fabric: Fabric, cfg: DictConfig) -> dict[str, float]:
    """Per-process sums of per-image class means, summed over processes; rank 0 writes the file."""
    st = cfg.stage
    model, label_set = load_segmentor(st.init_from)
    model.to(fabric.device).eval()
    dataset = target_train_dataset(cfg)
    loader = DataLoader(Subset(dataset, shard(list(range(len(dataset))), fabric)),
                        batch_size=int(st.get("batch_size", 1)), num_workers=int(cfg.datamodule.num_workers),
                        collate_fn=collate)  # fmt: skip
    acc = CentroidAccumulator(model.num_classes, model.feat_dim, int(st.get("min_pixels", 5)))
    with torch.no_grad():
        for batch in loader:
            out = model(batch["image"].to(fabric.device).float().div_(255))
            acc.update(out.feat, out.logits.argmax(1))
    acc.sums = fabric.all_reduce(acc.sums.to(fabric.device), reduce_op="sum").cpu()
    acc.counts = fabric.all_reduce(acc.counts.to(fabric.device), reduce_op="sum").cpu()
    path = Path(st.get("output_path") or Path(cfg.paths.output_dir) / CENTROIDS_FILE)
    if fabric.global_rank == 0:
        save_centroids(path, acc.centroids(), acc.counts, label_set)
    fabric.barrier()
    seen = int((acc.counts > 0).sum())
    log.info("centroids: %d/%d classes seen over %d images, written to %s", seen, model.num_classes, len(dataset),
             path)  # fmt: skip
    return {"classes_seen": float(seen)}
