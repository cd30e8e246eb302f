"""Centroid maths, pseudo-label selection and class-mix against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diga.centroids import (
    CentroidAccumulator,
    class_mean_vectors,
    load_centroids,
    nearest_centroid_labels,
    nearest_centroid_probs,
    save_centroids,
    sequential_ema,
)
from diga.mixing import mix_images, mix_labels
from diga.models.weights import WeightFileError
from diga.pseudo_labels import bilateral_consensus, confidence_threshold, downsample_labels


def test_class_mean_vectors_hand_computed() -> None:
    # 1 image, D=2, 2×3 pixels; labels: class 0 on 4 pixels, class 1 on 2 pixels
    feat = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]).unsqueeze(0)
    labels = torch.tensor([[[0, 0, 1], [0, 0, 1]]])
    vec, ok = class_mean_vectors(feat, labels, num_classes=3, min_pixels=2)
    assert ok.tolist() == [[True, True, False]]
    assert vec[0, 0].tolist() == pytest.approx([(1 + 2 + 4 + 5) / 4, (0 + 0 + 1 + 1) / 4])
    assert vec[0, 1].tolist() == pytest.approx([(3 + 6) / 2, 0.5])
    assert vec[0, 2].tolist() == [0.0, 0.0]
    # with a prediction map: only pixels where label == prediction count; class 1 then has 1 pixel < 2
    pred = torch.tensor([[[0, 1, 0], [0, 0, 1]]])
    vec, ok = class_mean_vectors(feat, labels, 3, pred=pred, min_pixels=2)
    assert ok.tolist() == [[True, False, False]]
    assert vec[0, 0].tolist() == pytest.approx([(1 + 4 + 5) / 3, 2 / 3])


def test_zero_sum_vectors_are_skipped_like_the_reference() -> None:
    feat = torch.zeros(1, 2, 2, 2)
    _vec, ok = class_mean_vectors(feat, torch.zeros(1, 2, 2, dtype=torch.long), 2, min_pixels=1)
    assert not ok.any()


def test_sequential_ema_matches_the_loop() -> None:
    torch.manual_seed(0)
    mu = torch.randn(4, 3)
    classes = torch.tensor([2, 0, 2, 2, 1, 0])
    vecs = torch.randn(6, 3)
    m = 0.1
    expected = mu.clone()
    for c, v in zip(classes, vecs):
        expected[c] = (1 - m) * expected[c] + m * v
    torch.testing.assert_close(sequential_ema(mu, classes, vecs, m), expected)
    torch.testing.assert_close(sequential_ema(mu, classes[:0], vecs[:0], m), mu)


def test_sequential_ema_hand_computed() -> None:
    mu = torch.zeros(2, 1)
    out = sequential_ema(mu, torch.tensor([0, 0]), torch.tensor([[1.0], [3.0]]), 0.5)
    # μ0: 0 → 0.5·0 + 0.5·1 = 0.5 → 0.5·0.5 + 0.5·3 = 1.75
    assert out.tolist() == [[1.75], [0.0]]


def test_nearest_centroid_labels() -> None:
    centroids = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    feat = torch.tensor([[[1.0, 9.0]], [[0.0, 0.0]]]).unsqueeze(0)  # 1×2×1×2: pixel features (1,0) and (9,0)
    probs = nearest_centroid_probs(feat, centroids)
    d0 = torch.tensor([1.0, 9.0])
    expected0 = torch.exp(-d0) / (torch.exp(-d0) + torch.exp(-(10 - d0)))
    torch.testing.assert_close(probs[0, 0, 0], expected0)
    assert nearest_centroid_labels(feat, centroids, (1, 2)).tolist() == [[[0, 1]]]
    assert nearest_centroid_labels(feat, centroids, (2, 4)).shape == (1, 2, 4)


def test_bilateral_consensus_and_threshold() -> None:
    offline = torch.tensor([[[0, 1, 2, 3]]])
    centroid = torch.tensor([[[0, 2, 2, 1]]])
    assert bilateral_consensus(offline, centroid).tolist() == [[[0, 255, 2, 255]]]
    probs = torch.tensor([[0.9, 0.4], [0.1, 0.6]]).view(1, 2, 1, 2)
    assert confidence_threshold(probs, 0.8).tolist() == [[[0, 255]]]


def test_downsample_labels_nearest() -> None:
    lab = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]])
    assert downsample_labels(lab, (2, 2)).tolist() == [[[0, 1], [2, 3]]]


def test_class_mix_labels_paste_source_with_its_void() -> None:
    y_target = torch.tensor([[[4, 255], [5, 5]]])
    y_source = torch.tensor([[[1, 1], [255, 2]]])
    mask = torch.tensor([[[True, False], [True, False]]])  # selected source values: {1, 255}
    assert mix_labels(y_target, y_source, mask).tolist() == [[[1, 255], [255, 5]]]
    x = mix_images(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2), mask)
    assert x[0, 0].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_accumulator_is_exact_mean_of_image_vectors(tmp_path: Path) -> None:
    acc = CentroidAccumulator(num_classes=2, feat_dim=1, min_pixels=1)
    acc.update(torch.full((1, 1, 2, 2), 2.0), torch.zeros(1, 2, 2, dtype=torch.long))
    acc.update(torch.full((1, 1, 2, 2), 4.0), torch.zeros(1, 2, 2, dtype=torch.long))
    assert acc.centroids().tolist() == [[3.0], [0.0]] and acc.counts.tolist() == [2, 0]
    path = tmp_path / "c.pt"
    save_centroids(path, acc.centroids(), acc.counts, "toy")
    assert load_centroids(path, 2, 1).tolist() == [[3.0], [0.0]]
    with pytest.raises(WeightFileError, match=r"c\.pt: centroids have shape \(2, 1\), the model needs \(19, 256\)"):
        load_centroids(path, 19, 256)
    with pytest.raises(WeightFileError, match="not found"):
        load_centroids(tmp_path / "missing.pt", 2, 1)


def test_per_class_selection_stats_hand_computed() -> None:
    from diga.pseudo_labels import per_class_selection_stats

    offline = torch.tensor([[0, 0, 1, 1, 2, 2]])
    selected = torch.tensor([[0, 255, 1, 1, 255, 255]])
    truth = torch.tensor([[0, 1, 1, 0, 2, 2]])
    s = per_class_selection_stats(offline, selected, 3, truth)
    torch.testing.assert_close(s["kept"], torch.tensor([0.5, 1.0, 0.0]))
    assert s["precision"][0] == 1.0 and s["precision"][1] == 0.5 and torch.isnan(s["precision"][2])


def test_classwise_thresholds_keep_the_most_confident_fraction_per_class() -> None:
    from diga.pseudo_labels import classwise_thresholds, confidence_threshold

    bins = 10
    hist = torch.zeros(2, bins)
    hist[0, [2, 5, 8, 9]] = 1  # class 0: confidences 0.2, 0.5, 0.8, 0.9 → keep the top half: threshold 0.8
    hist[1, 7] = 4  # class 1: all at 0.7 → threshold 0.7 (keeps all, ≥ half)
    thr = classwise_thresholds(hist, 0.5)
    torch.testing.assert_close(thr, torch.tensor([0.8, 0.7]))
    probs = torch.tensor([[0.85, 0.15], [0.75, 0.25], [0.3, 0.7]]).T.reshape(1, 2, 3, 1)
    assert confidence_threshold(probs, thr).flatten().tolist() == [0, 255, 1]


def test_reference_running_mean_by_hand() -> None:
    """The authors' running update, replayed: class 0 sees 2, 4, 6; class 1 only image 1 (value 5)."""
    from diga.centroids.store import reference_running_mean

    vectors = torch.tensor([[[2.0], [9.0]], [[4.0], [5.0]], [[6.0], [9.0]]])  # N=3 images × C=2 × D=1
    valid = torch.tensor([[True, False], [True, True], [True, False]])
    mu, count = reference_running_mean(vectors, valid, passes=1, sample_cap=3000)
    assert mu[:, 0].tolist() == pytest.approx([4.0, 5.0])  # uncapped, one pass: the exact mean
    assert count.tolist() == [3, 1]
    # cap 2: the third image enters with weight 1/3 over a count held at 2; a second pass keeps weighting late ones
    mu, count = reference_running_mean(vectors, valid, passes=1, sample_cap=2)
    assert mu[0, 0].item() == pytest.approx(4.0) and count.tolist() == [2, 1]
    mu, count = reference_running_mean(vectors, valid, passes=2, sample_cap=2)
    assert mu[0, 0].item() == pytest.approx(118 / 27)  # (4·2+2)/3 = 10/3 → (10/3·2+4)/3 = 32/9 → (32/9·2+6)/3
    assert mu[1, 0].item() == pytest.approx(5.0) and count.tolist() == [2, 2]
