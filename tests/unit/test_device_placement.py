"""The method's pure functions on the `meta` device: no tensor created on the CPU, no value read on the host.

A meta tensor has a shape and a device but no data. A function that mixes it with a tensor it made on the CPU
(`torch.arange(n)` without `device=`) fails with a device mismatch — what would crash on a GPU — and one that reads
a value (`.item()`, `bool(t)`, a boolean mask that must be counted) fails because there is nothing to read — what
would make the host wait for a GPU. So every function here runs on the device it is given, and runs there without
synchronising.
"""

from __future__ import annotations

import pytest
import torch

from diga.augment import PhotometricAugment
from diga.centroids.ops import (
    class_mean_vectors,
    nearest_centroid_labels,
    nearest_centroid_probs,
    ordered_class_vectors,
    sequential_ema,
)
from diga.losses import cross_entropy, ohem_cross_entropy, symmetric_distillation
from diga.mixing import mix_images, mix_labels, sample_class_masks, second_view
from diga.pseudo_labels import classwise_thresholds, confidence_threshold, per_class_selection_stats
from diga.pseudo_labels.selection import bilateral_consensus, downsample_labels, select_pseudo_labels
from diga.uda import BlockMaskGenerator, confidence_weighted_pseudo_labels, mask_images, masked_consistency_loss
from diga.uda.feature_distance import masked_feature_distance, thing_mask

META = torch.device("meta")
B, C, D, H, W = 2, 7, 16, 32, 48


def logits(c: int = C, h: int = H, w: int = W) -> torch.Tensor:
    return torch.empty(B, c, h, w, device=META)


def labels(h: int = H, w: int = W) -> torch.Tensor:
    return torch.empty(B, h, w, dtype=torch.long, device=META)


def images() -> torch.Tensor:
    return torch.empty(B, 3, H, W, device=META)


def on_meta(*outputs: object) -> None:
    for out in outputs:
        tensors = out if isinstance(out, (tuple, list)) else [out]
        for t in tensors:
            assert isinstance(t, torch.Tensor) and t.device == META, type(t)


CASES = {
    "cross_entropy": lambda: cross_entropy(logits(), labels()),
    "cross_entropy weighted, all pixels": lambda: cross_entropy(
        logits(), labels(), "all_pixels", torch.empty(B, H, W, device=META)
    ),
    "ohem_cross_entropy": lambda: ohem_cross_entropy(logits(), labels(), 0.7, 100),
    "symmetric_distillation": lambda: symmetric_distillation(logits(), logits(), logits(), logits(), 0.5),
    "symmetric_distillation void-masked": lambda: symmetric_distillation(
        logits(), logits(), logits(), logits(), 0.5, labels=labels()
    ),
    "classwise_thresholds": lambda: classwise_thresholds(torch.empty(C, 1000, dtype=torch.float64, device=META), 0.5),
    "confidence_threshold per class": lambda: confidence_threshold(logits(), torch.empty(C, device=META)),
    "per_class_selection_stats": lambda: tuple(per_class_selection_stats(labels(), labels(), C, labels()).values()),
    "bilateral_consensus": lambda: bilateral_consensus(labels(), labels()),
    "select_pseudo_labels": lambda: select_pseudo_labels(labels(), labels(), "consensus"),
    "downsample_labels": lambda: downsample_labels(labels(), (8, 12)),
    "class_mean_vectors": lambda: class_mean_vectors(logits(D, 8, 12), labels(8, 12), C, labels(8, 12)),
    "ordered_class_vectors": lambda: ordered_class_vectors(
        [logits(D, 8, 12)] * 2, [labels(), labels()], [labels(8, 12)] * 2, C
    ),
    "sequential_ema": lambda: sequential_ema(
        torch.empty(C, D, device=META),
        torch.empty(4 * C, dtype=torch.long, device=META),
        torch.empty(4 * C, D, device=META),
        1e-4,
        torch.empty(4 * C, dtype=torch.bool, device=META),
    ),
    "nearest_centroid_probs": lambda: nearest_centroid_probs(logits(D, 8, 12), torch.empty(C, D, device=META)),
    "nearest_centroid_labels": lambda: nearest_centroid_labels(
        logits(D, 8, 12), torch.empty(C, D, device=META), (H, W)
    ),
    "sample_class_masks": lambda: sample_class_masks(labels(), C),
    "mix_images": lambda: mix_images(images(), images(), torch.empty(B, H, W, dtype=torch.bool, device=META)),
    "mix_labels": lambda: mix_labels(labels(), labels(), torch.empty(B, H, W, dtype=torch.bool, device=META)),
    "second_view (CrDoMix)": lambda: second_view(images(), images(), labels(), C)[0],
    "confidence_weighted_pseudo_labels": lambda: tuple(
        confidence_weighted_pseudo_labels(logits(h=8, w=12), 0.968, size=(H, W))
    ),
    "BlockMaskGenerator": lambda: BlockMaskGenerator(0.7, 8)(images()),
    "mask_images": lambda: mask_images(images(), torch.empty(B, 1, H, W, device=META), torch.empty(3, device=META)),
    "masked_consistency_loss": lambda: masked_consistency_loss(
        logits(h=8, w=12), labels(), torch.empty(B, H, W, device=META)
    ),
    "thing_mask": lambda: thing_mask(labels(), (8, 12), (1, 2), C),
    "masked_feature_distance": lambda: masked_feature_distance(
        logits(D, 8, 12), logits(D, 8, 12), torch.empty(B, 8, 12, dtype=torch.bool, device=META)
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_runs_on_the_device_of_its_inputs_without_reading_them(name: str) -> None:
    on_meta(CASES[name]())


@pytest.mark.parametrize("space", ["rgb01", "reference"])
def test_photometric_augmentation_reads_nothing_on_the_images_device(space: str, monkeypatch) -> None:
    """Random parameters are drawn on the host: kornia's Python `if`s on them never read the images' device, even
    after the module was moved with its LightningModule (kornia moves its sampling along by default)."""
    from kornia.augmentation.base import _BasicAugmentationBase

    def move_to_gpu(self, fn, *args, **kwargs):  # what kornia records when its module goes to a GPU
        out = torch.nn.Module._apply(self, fn, *args, **kwargs)
        self.device = torch.device("cuda")
        return out

    monkeypatch.setattr(_BasicAugmentationBase, "_apply", move_to_gpu)
    aug = PhotometricAugment(jitter_p=1.0, grayscale_p=0.5, blur_p=1.0, sharpness_p=1.0, space=space)
    aug.to(torch.float64)
    assert all(op.device == torch.device("cpu") for op in aug.ops)
    aug._mean = aug._mean.to(META)  # the module itself cannot go to meta (kornia validates its ranges on the device)
    on_meta(aug(images()))
