"""Pictures of a pipeline run: a bar chart of target mIoU per stage and a grid of predictions per stage."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from diga.data.io import atomic_write_bytes
from diga.data.labels import LabelSet
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


@torch.no_grad()
def prediction_grid(models: Mapping[str, Segmentor], images: torch.Tensor, labels: torch.Tensor,
                    label_set: LabelSet, path: str | Path) -> None:  # fmt: skip
    """Rows = images; columns = image | ground truth | one prediction per model (in the given order)."""
    from PIL import Image

    preds = {n: predict_logits(m.eval(), images, InferenceConfig(), m.num_classes).argmax(1) for n, m in models.items()}
    rows = []
    for i in range(images.shape[0]):
        cells = [to_uint8_hwc(images[i]), label_set.colorize(labels[i].numpy())]
        cells += [label_set.colorize(p[i].numpy()) for p in preds.values()]
        rows.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], axis=1))
    grid = np.concatenate(rows, axis=0)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
