"""Image panels for loggers: image | ground truth | prediction, coloured with the label set's palette.

The same pictures and tables go to every W&B and TensorBoard logger of the run (`log_images` dispatches); other
loggers (csv, none) take no images and get nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

from diga.data.labels import IGNORE_INDEX, LabelSet

Loggers: TypeAlias = "Logger | Sequence[Logger] | None"  # a module's `self.loggers` (or one logger)


def to_uint8_hwc(img: torch.Tensor) -> np.ndarray:
    """3×H×W float image in [0, 1] → H×W×3 uint8."""
    return (img.clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()


def overlay(image: np.ndarray, label: np.ndarray, label_set: LabelSet, alpha: float) -> np.ndarray:
    """H×W×3 uint8 image blended with the label set's colours of an H×W label map (`alpha`: the colours' weight)."""
    return blend(image, label_set.colorize(label), alpha)


def blend(image: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """`alpha`·colours + (1 − `alpha`)·image, both H×W×3 uint8 (for callers that already hold the colours)."""
    return (alpha * colours.astype(np.float32) + (1 - alpha) * image.astype(np.float32)).astype(np.uint8)


def panel(image: torch.Tensor, label: torch.Tensor | None, pred: torch.Tensor, labels: LabelSet) -> np.ndarray:
    parts = [to_uint8_hwc(image)]
    if label is not None:
        parts.append(labels.colorize(label.cpu().numpy()))
    parts.append(labels.colorize(pred.cpu().numpy()))
    return np.concatenate(parts, axis=1)


def as_list(loggers: Loggers) -> list[Logger]:
    """The run's loggers as a list: callers pass `self.loggers`, since `self.logger` is only the first of them."""
    if loggers is None:
        return []
    return list(loggers) if isinstance(loggers, Sequence) else [loggers]


def wandb_loggers(loggers: Loggers) -> list[WandbLogger]:
    return [lg for lg in as_list(loggers) if isinstance(lg, WandbLogger)]


def tensorboard_loggers(loggers: Loggers) -> list[TensorBoardLogger]:
    return [lg for lg in as_list(loggers) if isinstance(lg, TensorBoardLogger)]


def image_loggers(loggers: Loggers) -> list[Logger]:
    """The loggers that take images (so that callers draw nothing for a run that logs none)."""
    return [*wandb_loggers(loggers), *tensorboard_loggers(loggers)]


def tensorboard_tags(key: str, captions: Sequence[str]) -> list[str]:
    """One tag per image (TensorBoard shows one image per tag and step): `key/<caption>` when the captions tell the
    images apart (e.g. `val/predictions/toy_target_0`), else `key/<index>`."""
    names = [re.sub(r"[^A-Za-z0-9_.-]+", "_", c).strip("_") for c in captions]
    if all(names) and len(set(names)) == len(names):
        return [f"{key}/{n}" for n in names]
    return [f"{key}/{i}" for i in range(len(captions))]


def log_images(loggers: Loggers, key: str, images: list[np.ndarray], captions: list[str], step: int,
               **wandb_kwargs: Any) -> None:  # fmt: skip
    """Send H×W×3 uint8 images to every W&B logger (one `log_image`, with `wandb_kwargs` such as masks) and every
    TensorBoard logger (one `add_image` per image) among `loggers`; other loggers get nothing."""
    if not images:
        return
    for lg in wandb_loggers(loggers):
        lg.log_image(key=key, images=images, caption=captions, step=step, **wandb_kwargs)
    for lg in tensorboard_loggers(loggers):
        for tag, image in zip(tensorboard_tags(key, captions), images):
            lg.experiment.add_image(tag, image, step, dataformats="HWC")


def log_segmentation_images(loggers: Loggers, key: str, entries: list[dict[str, Any]], labels: LabelSet,
                            step: int) -> None:  # fmt: skip
    """W&B: each image with prediction/ground-truth masks. TensorBoard has no mask overlay: image | GT | prediction."""
    if not entries:
        return
    wandb, tensorboard = wandb_loggers(loggers), tensorboard_loggers(loggers)
    samples = [(e, i) for e in entries for i in range(e["image"].shape[0])]
    captions = [f"{e['set']} #{i}" for e, i in samples]
    if wandb:
        class_labels = dict(enumerate(labels.classes)) | {IGNORE_INDEX: "ignore"}
        masks = [
            {
                "prediction": {"mask_data": e["pred"][i].numpy().astype(np.uint8), "class_labels": class_labels},
                "ground_truth": {"mask_data": e["label"][i].numpy().astype(np.uint8), "class_labels": class_labels},
            }
            for e, i in samples
        ]
        log_images(wandb, key, [to_uint8_hwc(e["image"][i]) for e, i in samples], captions, step, masks=masks)
    if tensorboard:
        panels = [panel(e["image"][i], e["label"][i], e["pred"][i], labels) for e, i in samples]
        log_images(tensorboard, key, panels, captions, step)


def log_views(loggers: Loggers, key: str, x: torch.Tensor, y: torch.Tensor, views: dict[str, torch.Tensor],
              pred_logits: torch.Tensor, labels: LabelSet, step: int, max_images: int = 2) -> None:  # fmt: skip
    """One row per image: source | photometric | translated | mixture | GT | prediction."""
    if not image_loggers(loggers):
        return  # no logger takes images: skip the colouring
    rows = []
    for i in range(min(max_images, x.shape[0])):
        parts = [to_uint8_hwc(x[i])] + [to_uint8_hwc(views[k][i]) for k in ("aug", "translated", "mixed") if k in views]
        parts += [labels.colorize(y[i].cpu().numpy()), labels.colorize(pred_logits[i].argmax(0).cpu().numpy())]
        rows.append(np.concatenate(parts, axis=1))
    log_images(loggers, key, rows, ["source | A(x) | T(x) | mixture | GT | prediction"] * len(rows), step)


def log_image_rows(loggers: Loggers, key: str, rows: list[list[np.ndarray]], caption: str, step: int) -> None:
    """Log each row (a list of H×W×3 uint8 panels) as one image."""
    if rows:
        log_images(loggers, key, [np.concatenate(r, axis=1) for r in rows], [caption] * len(rows), step)


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


def log_class_tables(loggers: Loggers, results: dict[str, dict[str, float]], confmats: dict[str, torch.Tensor],
                     labels: LabelSet, step: int) -> None:  # fmt: skip
    """A per-class IoU table (one column per validation set; W&B table, TensorBoard markdown text) and a
    confusion-matrix heatmap per set."""
    wandb, tensorboard = wandb_loggers(loggers), tensorboard_loggers(loggers)
    if not results or not (wandb or tensorboard):
        return  # no heatmaps drawn for a run whose loggers take none
    names = list(results)
    data = [[c, *(results[n][f"iou/{c}"] for n in names)] for c in labels.classes]
    for lg in wandb:
        lg.log_table(key="val/per_class_iou", columns=["class", *names], data=data, step=step)
    for lg in tensorboard:
        lg.experiment.add_text("val/per_class_iou", markdown_table(["class", *names], data), step)
    log_images([*wandb, *tensorboard], "val/confusion_matrix",
               [confusion_matrix_png(confmats[n], labels) for n in names], names, step)  # fmt: skip


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A markdown table (what TensorBoard's text tab renders); numbers (IoU in %) to two decimals."""
    lines = [columns, ["---"] * len(columns), *rows]
    return "\n".join("| " + " | ".join(_cell(v) for v in line) + " |" for line in lines)
