"""Image panels for loggers: image | ground truth | prediction, coloured with the label set's palette."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diga.data.labels import IGNORE_INDEX, LabelSet


def to_uint8_hwc(img: torch.Tensor) -> np.ndarray:
    """3×H×W float image in [0, 1] → H×W×3 uint8."""
    return (img.clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()


def panel(image: torch.Tensor, label: torch.Tensor | None, pred: torch.Tensor, labels: LabelSet) -> np.ndarray:
    parts = [to_uint8_hwc(image)]
    if label is not None:
        parts.append(labels.colorize(label.cpu().numpy()))
    parts.append(labels.colorize(pred.cpu().numpy()))
    return np.concatenate(parts, axis=1)


def log_segmentation_images(logger: Any, key: str, entries: list[dict[str, Any]], labels: LabelSet, step: int) -> None:
    """Log images with wandb masks when the logger is a WandbLogger; other loggers get nothing (no-op)."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger) or not entries:
        return
    class_labels = dict(enumerate(labels.classes)) | {IGNORE_INDEX: "ignore"}
    images, masks, captions = [], [], []
    for e in entries:
        for i in range(e["image"].shape[0]):
            images.append(to_uint8_hwc(e["image"][i]))
            masks.append(
                {
                    "prediction": {"mask_data": e["pred"][i].numpy().astype(np.uint8), "class_labels": class_labels},
                    "ground_truth": {"mask_data": e["label"][i].numpy().astype(np.uint8), "class_labels": class_labels},
                }
            )
            captions.append(f"{e['set']} #{i}")
    logger.log_image(key=key, images=images, masks=masks, caption=captions, step=step)
