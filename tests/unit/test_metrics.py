"""IoU and accuracies against hand-computed confusion matrices."""

from __future__ import annotations

import math

import pytest
import torch

from diga.data.labels import get_label_set
from diga.evaluation.metrics import SegMetric, accuracy_from_confmat, format_table, iou_from_confmat, summarize


def test_iou_from_hand_computed_confmat() -> None:
    # rows = GT, cols = prediction
    cm = torch.tensor([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    iou = iou_from_confmat(cm)
    # class0: TP3, FP0, FN1 -> 3/4 ; class1: TP2, FP1, FN2 -> 2/5 ; class2: TP0, FP2, FN0 -> 0/2
    assert iou.tolist() == pytest.approx([0.75, 0.4, 0.0])
    acc = accuracy_from_confmat(cm)
    assert acc["aAcc"] == pytest.approx(5 / 8)
    assert acc["mAcc"] == pytest.approx((3 / 4 + 2 / 4) / 2)  # class 2 has no GT pixel → NaN, left out


def test_absent_class_is_nan_and_excluded_from_mean() -> None:
    cm = torch.tensor([[2, 0, 0], [0, 2, 0], [0, 0, 0]])
    iou = iou_from_confmat(cm)
    assert iou[:2].tolist() == [1.0, 1.0] and math.isnan(iou[2])


def test_segmetric_ignores_255_and_accumulates() -> None:
    labels = get_label_set("toy")
    m = SegMetric(labels)
    target = torch.tensor([[[0, 0, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 6]]])  # the prediction at an ignored pixel must not count
    m.update(pred, target)
    m.update(torch.tensor([[[2, 2]]]), torch.tensor([[[2, 0]]]))
    s = m.summary()
    # confmat: GT0: pred0 ×1, pred1 ×1, pred2 ×1 ; GT1: pred1 ×1 ; GT2: pred2 ×1
    # IoU0 = 1/3 ; IoU1 = 1/(1+1) = 0.5 ; IoU2 = 1/(1+1) = 0.5 ; others absent
    assert s["mIoU"] == pytest.approx(100 * (1 / 3 + 0.5 + 0.5) / 3)
    assert s["iou/road"] == pytest.approx(100 / 3)
    assert math.isnan(s["iou/person"])


def test_synthia_13_class_subset() -> None:
    labels = get_label_set("synthia16")
    cm = torch.diag(torch.ones(16, dtype=torch.long))
    cm[3, 3] = cm[4, 4] = cm[5, 5] = 0
    cm[3, 4] = 1  # wall predicted as fence: wall IoU 0, fence IoU 0, pole absent (NaN)
    s = summarize(cm, labels)
    assert s["mIoU13"] == pytest.approx(100.0)
    assert s["mIoU"] == pytest.approx(100 * 13 / 15)


def test_logits_are_argmaxed() -> None:
    m = SegMetric(get_label_set("toy"))
    logits = torch.zeros(1, 7, 1, 2)
    logits[0, 3, 0, 0] = 1
    logits[0, 4, 0, 1] = 1
    m.update(logits, torch.tensor([[[3, 4]]]))
    assert m.summary()["mIoU"] == pytest.approx(100.0)


def test_format_table_lists_classes_and_summary() -> None:
    labels = get_label_set("toy")
    s = summarize(torch.diag(torch.arange(1, 8)), labels)
    table = format_table({"toy_target": s}, labels)
    assert "sidewalk" in table and "mIoU" in table and "100.00" in table


def test_set_means_average_every_number_over_the_named_sets() -> None:
    """DG's headline: the mean over the unseen domains, of mIoU and of each class; a class NaN in one set is averaged
    over the others; a mean over a set that was not evaluated is left out."""
    import math

    from diga.evaluation.metrics import with_set_means

    results = {"cityscapes": {"mIoU": 48.0, "iou/road": 90.0, "iou/train": float("nan")},
               "bdd100k": {"mIoU": 44.0, "iou/road": 80.0, "iou/train": 10.0},
               "mapillary": {"mIoU": 53.0, "iou/road": 85.0, "iou/train": float("nan")},
               "synthia": {"mIoU": 37.0, "iou/road": 70.0, "iou/train": float("nan")}}  # fmt: skip
    out = with_set_means(results, {"mean_real": ["cityscapes", "bdd100k", "mapillary"], "absent": ["acdc"]})
    assert list(out) == ["cityscapes", "bdd100k", "mapillary", "synthia", "mean_real"]
    assert out["mean_real"]["mIoU"] == 48.333333333333336 and out["mean_real"]["iou/road"] == 85.0
    assert out["mean_real"]["iou/train"] == 10.0
    assert math.isnan(with_set_means(results, {"m": ["cityscapes", "synthia"]})["m"]["iou/train"])
    assert with_set_means(results, None) == results and results["cityscapes"]["mIoU"] == 48.0


def test_pooled_sets_sum_the_confusion_matrices_by_hand() -> None:
    """Pooled IoU is not the mean of the parts' IoUs: one matrix over all the images."""
    import torch

    from diga.evaluation.metrics import iou_from_confmat, with_pooled_sets

    fog = torch.tensor([[8, 2], [0, 0]])  # class 1 only predicted: IoU 0.8, 0
    night = torch.tensor([[0, 0], [1, 9]])  # class 0 only predicted: IoU 0, 0.9
    out = with_pooled_sets({"fog": fog, "night": night}, {"all": ["fog", "night"]})
    assert list(out) == ["all", "fog", "night"] and out["all"].tolist() == [[8, 2], [1, 9]]
    assert iou_from_confmat(out["all"]).tolist() == [8 / 11, 9 / 12]
    assert with_pooled_sets({"fog": fog}, None) == {"fog": fog}
