"""Stage `centroids`: initial class centroids from the warm-up model's own target predictions.

Per target training image (the authors: Cityscapes train at 512×1024, `stage.resize`): features and logits at
feature resolution, pseudo-label = argmax, per-class mean feature where ≥ `min_pixels` pixels. `averaging`:

* `exact` (default): the centroid is the mean of those per-image vectors — one vectorised pass, sums all-reduced
  over processes;
* `reference`: the authors' capped running mean replayed over `passes` passes in dataset order (their file exactly);
  the per-image vectors of every process are gathered in dataset order first.

Written atomically to `centroids.pt`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning_fabric import Fabric
from omegaconf import DictConfig
from torch.utils.data import Subset

from diga.centroids import CentroidAccumulator, class_mean_vectors, reference_running_mean, save_centroids
from diga.data.datamodule import inference_loader
from diga.models.loading import load_segmentor
from diga.offline.launch import launch, shard, target_train_dataset
from diga.utils.artifacts import CENTROIDS
from diga.utils.progress import progress

log = logging.getLogger(__name__)


def run_centroids(cfg: DictConfig) -> dict[str, float]:
    if not cfg.stage.get("init_from"):
        raise ValueError("stage=centroids needs stage.init_from (the warm-up final_model.pt)")
    if cfg.stage.get("averaging", "exact") not in ("exact", "reference"):
        raise ValueError(f"stage.averaging must be 'exact' or 'reference', got {cfg.stage.averaging!r}")
    return launch(cfg, _accumulate_and_save)


def _accumulate_and_save(fabric: Fabric, cfg: DictConfig) -> dict[str, float]:
    """Per-process class vectors, combined over processes; rank 0 writes the file."""
    st = cfg.stage
    model, label_set = load_segmentor(st.init_from)
    model.to(fabric.device).eval()
    dataset = target_train_dataset(cfg)
    mine = shard(list(range(len(dataset))), fabric)
    loader = inference_loader(Subset(dataset, mine), int(st.get("batch_size", 1)), int(cfg.datamodule.num_workers))
    min_pixels = int(st.get("min_pixels", 5))
    reference = st.get("averaging", "exact") == "reference"
    acc = CentroidAccumulator(model.num_classes, model.feat_dim, min_pixels)
    per_image: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for batch in progress(loader, len(loader), "centroids", fabric.global_rank == 0):
            out = model(batch["image"].to(fabric.device).float().div_(255))
            if reference:
                vec, ok = class_mean_vectors(out.feat, out.logits.argmax(1), model.num_classes, min_pixels=min_pixels)
                per_image += list(zip(vec.cpu(), ok.cpu()))
            else:
                acc.update(out.feat, out.logits.argmax(1))
    if reference:
        centroids, counts = _reference_centroids(fabric, per_image, mine, len(dataset), model.num_classes,
                                                 model.feat_dim, int(st.passes), int(st.sample_cap))  # fmt: skip
    else:
        acc.sums = fabric.all_reduce(acc.sums.to(fabric.device), reduce_op="sum").cpu()
        acc.counts = fabric.all_reduce(acc.counts.to(fabric.device), reduce_op="sum").cpu()
        centroids, counts = acc.centroids(), acc.counts
    path = Path(st.get("output_path") or Path(cfg.paths.output_dir) / CENTROIDS)
    if fabric.global_rank == 0:
        save_centroids(path, centroids, counts, label_set)
    fabric.barrier()
    seen = int((counts > 0).sum())
    log.info("centroids (%s): %d/%d classes seen over %d images, written to %s", st.get("averaging", "exact"), seen,
             model.num_classes, len(dataset), path)  # fmt: skip
    return {"classes_seen": float(seen)}


def _reference_centroids(fabric: Fabric, per_image: list[tuple[torch.Tensor, torch.Tensor]], mine: list[int],
                         n_images: int, num_classes: int, feat_dim: int, passes: int,
                         sample_cap: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gather every process's per-image vectors into dataset order, then replay the authors' running mean."""
    vectors = torch.zeros(n_images, num_classes, feat_dim)
    valid = torch.zeros(n_images, num_classes, dtype=torch.bool)
    for i, (v, ok) in zip(mine, per_image):
        vectors[i], valid[i] = v, ok
    if fabric.world_size > 1:  # each image is filled by exactly one process, the others hold zeros
        vectors = fabric.all_reduce(vectors.to(fabric.device), reduce_op="sum").cpu()
        valid = fabric.all_reduce(valid.to(fabric.device).int(), reduce_op="sum").cpu().bool()
    return reference_running_mean(vectors, valid, passes, sample_cap)
