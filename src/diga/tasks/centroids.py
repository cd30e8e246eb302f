"""Stage `centroids`: initial class centroids from the warm-up model's own target predictions (METHOD.md §6).

Per target training image: features and logits at feature resolution, pseudo-label = argmax, per-class mean
feature where ≥ `min_pixels` pixels; the centroid is the mean of those per-image vectors. One pass, vectorised
(`class_mean_vectors`), written atomically to `centroids.pt`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from diga.centroids import CentroidAccumulator, save_centroids
from diga.data.datamodule import collate
from diga.models.checkpoint import load_segmentor, resolve_device
from diga.tasks.pseudolabel import target_train_dataset

log = logging.getLogger(__name__)
CENTROIDS_FILE = "centroids.pt"


def run_centroids(cfg: DictConfig) -> dict[str, float]:
    st = cfg.stage
    if not st.get("init_from"):
        raise ValueError("stage=centroids needs stage.init_from (the warm-up final_model.pt)")
    model, label_set = load_segmentor(st.init_from)
    device = resolve_device(st.get("device", "auto"))
    model.to(device).eval()
    loader = DataLoader(target_train_dataset(cfg), batch_size=int(st.get("batch_size", 1)),
                        num_workers=int(cfg.datamodule.num_workers), collate_fn=collate)  # fmt: skip
    acc = CentroidAccumulator(model.num_classes, model.feat_dim, int(st.get("min_pixels", 5)))
    with torch.no_grad():
        for batch in loader:
            out = model(batch["image"].to(device).float().div_(255))
            acc.update(out.feat, out.logits.argmax(1))
    path = Path(st.get("output_path") or Path(cfg.paths.output_dir) / CENTROIDS_FILE)
    save_centroids(path, acc.centroids(), acc.counts, label_set)
    seen = int((acc.counts > 0).sum())
    log.info("centroids: %d/%d classes seen, written to %s", seen, model.num_classes, path)
    return {"classes_seen": float(seen)}
