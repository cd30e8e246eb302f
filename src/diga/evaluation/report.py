"""Pictures of a pipeline run: a bar chart of target mIoU per stage and a grid of predictions per stage."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from diga.data.labels import LabelSet
from diga.evaluation.figures import save_figure
from diga.evaluation.inference import InferenceConfig, predict_logits
from diga.evaluation.visualize import to_uint8_hwc
from diga.models.segmentor import Segmentor


def plot_results(rows: Mapping[str, Mapping[str, float]], path: str | Path, title: str) -> None:
    """Horizontal bars, one per stage and validation set (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({s for r in rows.values() for s in r})
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(rows) * len(sets)))
    labels, values = [], []
    for row, vals in rows.items():
        for s in sets:
            labels.append(row if len(sets) == 1 else f"{row} ({s})")
            values.append(vals.get(s, float("nan")))
    y = np.arange(len(values))[::-1]
    bars = ax.barh(y, values, color=["#999999" if "source-only" in lab else "#3b7dd8" for lab in labels])
    ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.set_yticks(y, labels)
    ax.set_xlabel("target mIoU (%)")
    ax.set_xlim(0, 100)
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_per_class(per_class: Mapping[str, Mapping[str, Mapping[str, float]]], classes: tuple[str, ...],
                   path: str | Path, title: str) -> None:  # fmt: skip
    """A stage × class heat map of IoU per validation set (a mean hides classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(per_class)
    if not sets:
        return
    n_rows = max(len(r) for r in per_class.values())
    fig, axes = plt.subplots(len(sets), 1, figsize=(1.6 + 0.55 * len(classes), 1.0 + 0.45 * n_rows * len(sets)),
                             squeeze=False)  # fmt: skip
    for ax, name in zip(axes[:, 0], sets):
        rows = per_class[name]
        data = np.asarray([[rows[r].get(c, np.nan) for c in classes] for r in rows], dtype=float)
        ax.imshow(data, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(data):
            ax.text(j, i, "–" if np.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if not np.isnan(v) and v < 50 else "black")  # fmt: skip
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
        ax.set_title(f"{title} — {name}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


@torch.no_grad()
def predict_each(models: Mapping[str, Segmentor], images: torch.Tensor, inference: InferenceConfig,
                 device: torch.device) -> dict[str, torch.Tensor]:  # fmt: skip
    """Class maps of `images` from every model, each moved to `device` for its turn only (one model in device
    memory at a time), returned on the CPU. One image at a time, so that memory does not grow with the images
    shown (HRDA's batched windows on four 1920×1080 images took more than 20 GB of a CPU's memory)."""
    preds = {}
    inference = inference.for_device(device)
    for name, model in models.items():
        model.to(device).eval()
        preds[name] = torch.cat([predict_logits(model, x[None].to(device), inference, model.num_classes).argmax(1).cpu()
                                 for x in images])  # fmt: skip
        model.to("cpu")
    return preds


def prediction_grid(models: Mapping[str, Segmentor], images: torch.Tensor, labels: torch.Tensor | None,
                    label_set: LabelSet, path: str | Path, inference: InferenceConfig | None = None,
                    device: torch.device | str = "cpu") -> None:  # fmt: skip
    """Rows = images; columns = image | ground truth (unless `labels` is None) | one prediction per model (in the
    given order), with column titles on top and a colour legend of the classes below (matplotlib, Agg backend). The
    models run on `device` with `inference` (default: whole image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    preds = predict_each(models, images, inference or InferenceConfig(), torch.device(device))
    titles = ["image", *(["ground truth"] if labels is not None else []), *preds]
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    cell = 2.2
    fig, axes = plt.subplots(n, len(titles), figsize=(cell * len(titles), cell * h / w * n + 0.9), squeeze=False)
    for i in range(n):
        cells = [to_uint8_hwc(images[i]), *([label_set.colorize(labels[i].numpy())] if labels is not None else [])]
        cells += [label_set.colorize(p[i].numpy()) for p in preds.values()]
        for j, c in enumerate(cells):
            axes[i, j].imshow(c)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=8)
    handles = [
        Patch(color=np.asarray(rgb) / 255, label=name) for name, rgb in zip(label_set.classes, label_set.palette)
    ]
    handles.append(Patch(color="black", label="ignore"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 10), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    save_figure(fig, path)
