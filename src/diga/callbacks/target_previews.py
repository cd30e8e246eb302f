"""Pictures of what the trained model predicts on target images, for a run that has no target labels.

Adapting to one's own camera images ends without a score: nothing is labelled. What a user can still judge is the
pictures, so at the end of training this callback predicts a fixed, evenly spaced handful of target training images
(unaugmented, at their own size) and writes `previews/<name>.png` (image | prediction | overlay) into the run
folder and to every logger that takes images. No label is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from diga.data.io import save_png
from diga.data.labels import LabelSet
from diga.evaluation.visualize import blend

PREVIEW_DIR = "previews"


def spaced_indices(n: int, k: int) -> list[int]:
    """`k` indices spread evenly over `0..n-1` (all of them when `k >= n`): the same images in every run."""
    if k >= n:
        return list(range(n))
    return [round(i * (n - 1) / max(k - 1, 1)) for i in range(k)]


def preview_panel(image: np.ndarray, pred: np.ndarray, labels: LabelSet, max_width: int = 640,
                  alpha: float = 0.5) -> np.ndarray:  # fmt: skip
    """image | prediction colours | overlay, each part at most `max_width` wide (H×3W×3 uint8)."""
    import cv2

    colours = labels.colorize(pred)
    mixed = blend(image, colours, alpha)
    h, w = image.shape[:2]
    if w > max_width:
        size = (max_width, max(1, round(h * max_width / w)))
        image, mixed = (cv2.resize(a, size, interpolation=cv2.INTER_AREA) for a in (image, mixed))
        colours = cv2.resize(colours, size, interpolation=cv2.INTER_NEAREST)
    return np.concatenate([image, colours, mixed], axis=1)


class TargetPreviews(pl.Callback):
    """At the end of training, predict `num_images` target training images; `num_images: 0` turns it off."""

    def __init__(self, num_images: int = 8, max_width: int = 640) -> None:
        self.num_images, self.max_width = int(num_images), int(max_width)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        target = getattr(datamodule, "cfg", {}).get("target") if datamodule is not None else None
        model, inference = getattr(pl_module, "model", None), getattr(pl_module, "inference", None)
        if not self.num_images or not trainer.is_global_zero or target is None or model is None or inference is None:
            return  # nothing to preview: no target domain, or a stage without a segmentation model (translator)
        rows = self.predict(pl_module, datamodule, target)
        folder = Path(trainer.default_root_dir) / PREVIEW_DIR
        for name, panel in rows:
            save_png(folder / f"{name}.png", panel)
        from diga.evaluation.visualize import log_image_rows

        log_image_rows(trainer.loggers, "target/previews", [[p] for _, p in rows],
                       "target image | prediction | overlay", int(trainer.global_step))  # fmt: skip

    @torch.no_grad()
    def predict(self, pl_module: Any, datamodule: Any, target: Any) -> list[tuple[str, np.ndarray]]:
        from diga.evaluation.inference import predict_logits

        dataset = datamodule.build_eval_dataset(target, "train", datamodule.scale, with_labels=False)
        was_training = pl_module.training
        pl_module.eval()
        rows = []
        try:
            for i in spaced_indices(len(dataset), self.num_images):
                item = dataset[i]
                image = item["image"].unsqueeze(0).to(pl_module.device)
                x = pl_module.prep(image)
                logits = predict_logits(pl_module.model, x, pl_module.inference, pl_module.model.num_classes,
                                        out_size=x.shape[-2:])  # fmt: skip
                pred = logits.argmax(1)[0].cpu().numpy()
                rgb = item["image"].permute(1, 2, 0).numpy()
                rows.append((item["name"], preview_panel(rgb, pred, pl_module.labels, self.max_width)))
        finally:
            pl_module.train(was_training)
        return rows
