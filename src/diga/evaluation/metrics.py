"""Segmentation metrics from a dataset-level confusion matrix (torchmetrics accumulates it, DDP-summed).

`iou_from_confmat` and friends are pure functions so they can be checked against hand-computed matrices.
Classes absent from both prediction and ground truth get IoU = NaN and are left out of the mean
(mmseg/REF `nanmean`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from diga.data.labels import IGNORE_INDEX, LabelSet
from diga.evaluation.tables import text_table


def iou_from_confmat(confmat: torch.Tensor) -> torch.Tensor:
    """Per-class IoU = TP / (TP + FP + FN); rows = ground truth, columns = prediction. NaN where union is 0."""
    cm = confmat.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def accuracy_from_confmat(confmat: torch.Tensor) -> dict[str, float]:
    cm = confmat.double()
    total = cm.sum()
    per_class = torch.where(cm.sum(1) > 0, cm.diag() / cm.sum(1).clamp(min=1), torch.full_like(cm.diag(), float("nan")))
    freq = cm.sum(1) / total.clamp(min=1)
    iou = iou_from_confmat(confmat)
    return {
        "aAcc": float(cm.diag().sum() / total.clamp(min=1)),
        "mAcc": float(per_class.nanmean()),
        "fwIoU": float((freq[~iou.isnan()] * iou[~iou.isnan()]).sum()),
    }


def summarize(confmat: torch.Tensor, label_set: LabelSet) -> dict[str, float]:
    """mIoU, subset mIoUs (e.g. SYNTHIA's 13-class mIoU13), per-class IoUs (`iou/<class>`), accuracies — in %."""
    iou = iou_from_confmat(confmat)
    out = {"mIoU": 100 * float(iou.nanmean())}
    for name, idx in label_set.subsets:
        out[name] = 100 * float(iou[list(idx)].nanmean())
    out.update({k: 100 * v for k, v in accuracy_from_confmat(confmat).items()})
    for c, name in enumerate(label_set.classes):
        out[f"iou/{name}"] = 100 * float(iou[c])
    return out


def with_pooled_sets(confmats: Mapping[str, torch.Tensor],
                     pooled: Mapping[str, Sequence[str]] | None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The pooled sets first, each the sum of its parts' confusion matrices (one matrix over all their images: ACDC's
    pooled validation from its four conditions, without reading an image twice), then `confmats` as they are."""
    pooled_cms = {name: sum(confmats[p] for p in parts) for name, parts in (pooled or {}).items()}
    return {**pooled_cms, **confmats}  # type: ignore[dict-item]


def with_set_means(results: Mapping[str, Mapping[str, float]],
                   means: Mapping[str, Sequence[str]] | None) -> dict[str, dict[str, float]]:  # fmt: skip
    """`results` plus, for each `name: [sets]` of `means`, the mean over those sets of every number (mIoU, per-class
    IoU, accuracies) — how domain generalisation reports several unseen domains (e.g. the mean mIoU of Cityscapes,
    BDD100K and Mapillary). A class no set scored (NaN everywhere) stays NaN. Sets that were not evaluated: no mean."""
    out = {name: dict(r) for name, r in results.items()}
    for name, sets in (means or {}).items():
        if not sets or any(s not in results for s in sets):
            continue
        keys = [k for k in results[sets[0]] if all(k in results[s] for s in sets)]
        mean: dict[str, float] = {}
        for k in keys:
            values = [float(results[s][k]) for s in sets if not math.isnan(float(results[s][k]))]
            mean[k] = sum(values) / len(values) if values else float("nan")
        out[name] = mean
    return out


class SegMetric(MulticlassConfusionMatrix):
    """Confusion matrix over `num_classes`, ignoring 255; `summary()` gives the table of `summarize`."""

    def __init__(self, label_set: LabelSet, **kwargs: object) -> None:
        super().__init__(num_classes=label_set.num_classes, ignore_index=IGNORE_INDEX, validate_args=False, **kwargs)
        self.label_set = label_set

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """`preds` are class ids (B×H×W) or logits (B×C×H×W, argmax taken). Labels were range-checked when read."""
        if preds.is_floating_point():
            preds = preds.argmax(1)
        super().update(preds, target.long())  # uint8 labels: index arithmetic (target·C + pred) would overflow

    def summary(self) -> dict[str, float]:
        return summarize(self.compute(), self.label_set)


def format_table(results: dict[str, dict[str, float]], label_set: LabelSet) -> str:
    """Per-class IoU table, one column per evaluated set."""
    names = list(results)
    rows = [["class", *names]]
    for cls in label_set.classes:
        rows.append([cls, *(f"{results[n][f'iou/{cls}']:.2f}" for n in names)])
    summary_keys = ["mIoU", *(s for s, _ in label_set.subsets), "aAcc", "mAcc"]
    rows.append(["-" * 8, *("-" * 6 for _ in names)])
    rows += [[k, *(f"{results[n][k]:.2f}" for n in names)] for k in summary_keys]
    return text_table(rows)
