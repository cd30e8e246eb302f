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


def log_views(logger: Any, key: str, x: torch.Tensor, y: torch.Tensor, views: dict[str, torch.Tensor],
              pred_logits: torch.Tensor, labels: LabelSet, step: int, max_images: int = 2) -> None:  # fmt: skip
    """One row per image: source | photometric | translated | mixture | GT | prediction (W&B only)."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    rows = []
    for i in range(min(max_images, x.shape[0])):
        parts = [to_uint8_hwc(x[i])] + [to_uint8_hwc(views[k][i]) for k in ("aug", "translated", "mixed") if k in views]
        parts += [labels.colorize(y[i].cpu().numpy()), labels.colorize(pred_logits[i].argmax(0).cpu().numpy())]
        rows.append(np.concatenate(parts, axis=1))
    logger.log_image(key=key, images=rows, caption=["source | A(x) | T(x) | mixture | GT | prediction"] * len(rows),
                     step=step)  # fmt: skip


def log_image_rows(logger: Any, key: str, rows: list[list[np.ndarray]], caption: str, step: int) -> None:
    """Log each row (a list of H×W×3 uint8 panels) as one image (W&B only)."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger) or not rows:
        return
    logger.log_image(
        key=key, images=[np.concatenate(r, axis=1) for r in rows], caption=[caption] * len(rows), step=step
    )


def confusion_matrix_png(confmat: torch.Tensor, labels: LabelSet) -> np.ndarray:
    """Row-normalised confusion matrix (rows = ground truth) as an H×W×3 uint8 heatmap."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    cm = confmat.double().cpu()
    norm = (cm / cm.sum(1, keepdim=True).clamp(min=1)).numpy()
    n = labels.num_classes
    fig, ax = plt.subplots(figsize=(1.5 + 0.35 * n, 1.2 + 0.35 * n))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), labels.classes, rotation=90)
    ax.set_yticks(range(n), labels.classes)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return np.asarray(Image.open(buf).convert("RGB"))


def log_class_tables(logger: Any, results: dict[str, dict[str, float]], confmats: dict[str, torch.Tensor],
                     labels: LabelSet, step: int) -> None:  # fmt: skip
    """W&B: a per-class IoU table (one column per validation set) and a confusion-matrix heatmap per set."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger) or not results:
        return
    names = list(results)
    data = [[c, *(results[n][f"iou/{c}"] for n in names)] for c in labels.classes]
    logger.log_table(key="val/per_class_iou", columns=["class", *names], data=data, step=step)
    logger.log_image(key="val/confusion_matrix", images=[confusion_matrix_png(confmats[n], labels) for n in names],
                     caption=names, step=step)  # fmt: skip
