"""DAFormer / MIC components (`diga.uda`) on tiny inputs with hand-computed results."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diga.data import rare_class_sampling as rcs_module
from diga.data import samplers
from diga.data.datasets import GTA5
from diga.data.rare_class_sampling import (
    ClassPixelStats,
    RareClassCropRetry,
    RareClassSampler,
    class_pixel_counts,
    rcs_class_probabilities,
    samples_with_class,
    scale_min_pixels,
)
from diga.data.transforms import ResizeOrCrop, seed_transform
from diga.uda import (
    CITYSCAPES_THING_CLASSES,
    BlockMaskGenerator,
    ImageNetFeatureDistance,
    confidence_weighted_pseudo_labels,
    downscale_label_ratio,
    mask_images,
    masked_consistency_loss,
    masked_feature_distance,
    thing_classes,
    thing_mask,
)
from tests import fakes


# --- rare class sampling: probabilities and image lists ------------------------------------------------------------
def test_rcs_probabilities_by_hand() -> None:
    classes, p = rcs_class_probabilities([0, 1, 3], temperature=1.0)
    # absent class 0 dropped; f = (1/4, 3/4), softmax((0.75, 0.25)) = (σ(0.5), 1 − σ(0.5))
    assert classes.tolist() == [1, 2]
    assert p == pytest.approx([1 / (1 + math.exp(-0.5)), 1 / (1 + math.exp(0.5))], abs=1e-12)
    classes, p = rcs_class_probabilities([2, 2, 0, 4], temperature=0.5)  # f = (.25, .25, .5) → z = (1.5, 1.5, 1)
    e = math.exp(0.5)
    assert classes.tolist() == [0, 1, 3] and p == pytest.approx([e / (2 * e + 1), e / (2 * e + 1), 1 / (2 * e + 1)])
    # frequencies or counts: the same (scale-free); T = 0.01 strongly favours the rare class
    _, p1 = rcs_class_probabilities([900, 100])
    _, p2 = rcs_class_probabilities([0.9, 0.1])
    assert p1 == pytest.approx(p2) and p1[1] == pytest.approx(1 / (1 + math.exp(-80)))


def _stats(counts: list[list[int]], sizes: list[tuple[int, int]]) -> ClassPixelStats:
    names = tuple(f"s{i}" for i in range(len(counts)))
    return ClassPixelStats(names, np.array(counts, dtype=np.int64), np.array(sizes, dtype=np.int64))


def test_samples_with_class_minimum_scales_with_the_pixel_count() -> None:
    # min 10 pixels at 10×20 → 5 pixels for a 10×10 label map, 10 for 20×10; strictly more than the minimum
    stats = _stats([[6, 5, 0], [0, 9, 1], [5, 0, 40]], [(10, 10), (10, 10), (20, 10)])
    got = samples_with_class(stats, [0, 1, 2], min_pixels=10, reference_size=(10, 20))
    assert {c: v.tolist() for c, v in got.items()} == {0: [0], 1: [1], 2: [2]}
    absolute = samples_with_class(stats, [0, 1, 2], min_pixels=5, reference_size=None)  # DAFormer's literal rule
    assert {c: v.tolist() for c, v in absolute.items()} == {0: [0], 1: [1], 2: [2]}
    assert scale_min_pixels(3000, (1052, 1914), (1052, 1914)) == 3000
    assert scale_min_pixels(3000, (526, 957), (1052, 1914)) == pytest.approx(750)
    with pytest.raises(ValueError, match="class 2"):
        samples_with_class(stats, [2], min_pixels=1000, reference_size=None)


# --- rare class sampling: the sampler ------------------------------------------------------------------------------
def _sampler(**kw: Any) -> RareClassSampler:
    args: dict[str, Any] = {"batch_size": 2, "total_steps": 6, "seed": 5}
    args.update(kw)
    return RareClassSampler([3, 7], [0.8, 0.2], {3: [0, 1, 2], 7: [4]}, **args)


def test_rare_class_sampler_yields_index_seed_class_from_the_class_lists() -> None:
    items = list(_sampler())
    assert len(items) == 12
    for index, aug_seed, c in items:
        assert (c == 3 and index in (0, 1, 2)) or (c == 7 and index == 4)
        assert 0 <= aug_seed < 2**31
    many = [c for _, _, c in _sampler(batch_size=100, total_steps=20)]
    assert np.mean(np.array(many) == 7) == pytest.approx(0.2, abs=0.03)


def test_rare_class_sampler_is_a_function_of_seed_and_position() -> None:
    full = list(_sampler())
    a = list(_sampler(start_step=lambda: 3))
    b = list(_sampler(start_step=lambda: 3))
    assert a == b == full[6:]  # two fresh iterators from the same position: the same draws, augmentation seeds too
    assert list(_sampler(seed=6)) != full


def test_rare_class_sampler_ddp_ranks_split_the_global_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    single = list(_sampler(batch_size=4, total_steps=3))
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(samplers, "rank_and_world", lambda r=rank: (r, 2))
        per_rank.append(list(_sampler(batch_size=2, total_steps=3)))
    assert per_rank[0] == single[0::2] and per_rank[1] == single[1::2]  # rank r takes positions p ≡ r (mod 2)
    monkeypatch.setattr(samplers, "rank_and_world", lambda: (1, 2))
    assert list(_sampler(batch_size=2, total_steps=3, start_step=lambda: 1)) == single[5::2]
    assert isinstance(_sampler(), torch.utils.data.DistributedSampler)


def test_sampler_from_stats() -> None:
    stats = _stats([[100, 0], [90, 1], [0, 50]], [(10, 10)] * 3)
    s = RareClassSampler.from_stats(stats, 1, 4, seed=0, min_pixels=10, reference_size=(10, 10))
    assert s.classes.tolist() == [0, 1] and s.files[0].tolist() == [0, 1] and s.files[1].tolist() == [2]


# --- rare class sampling: crop retry ------------------------------------------------------------------------------
class _Scripted:
    """A 'transform' that returns prepared masks in turn (and counts how often it was called)."""

    def __init__(self, counts: list[int]) -> None:
        self.counts, self.calls = counts, 0

    def __call__(self, **data: Any) -> dict[str, Any]:
        n = self.counts[min(self.calls, len(self.counts) - 1)]
        self.calls += 1
        mask = np.zeros((4, 4), dtype=np.uint8)
        mask.flat[:n] = 9
        return {"image": data["image"], "mask": mask, "draw": self.calls}


def test_crop_retry_redraws_until_the_class_has_enough_pixels() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    tf = _Scripted([0, 2, 3, 16])  # minimum 4 · 0.5 = 2 pixels, strictly more needed → the third draw
    out = RareClassCropRetry(tf, min_pixels=4, min_crop_ratio=0.5)(image=img, mask=img[..., 0], rare_class=9)
    assert out["draw"] == 3 and tf.calls == 3
    never = _Scripted([1])
    out = RareClassCropRetry(never, min_pixels=4)(image=img, mask=img[..., 0], rare_class=9)
    assert never.calls == 11 and out["draw"] == 11  # DAFormer: 10 failed tests, then the 11th crop is kept untested
    once = _Scripted([0])
    RareClassCropRetry(once, min_pixels=4)(image=img, mask=img[..., 0], rare_class=None)
    assert once.calls == 1


def test_crop_retry_is_deterministic_with_a_seeded_pipeline() -> None:
    label = np.zeros((64, 64), np.uint8)
    label[:24, :24] = 5  # a rare class in one corner: a random 16×16 crop shows > 4 of its pixels in ~20 % of draws
    image = np.zeros((64, 64, 3), np.uint8)
    crop = A.Compose([ResizeOrCrop((16, 16))], strict=True)
    tf = RareClassCropRetry(crop, min_pixels=8, min_crop_ratio=0.5)
    outs = []
    for _ in range(2):
        seed_transform(tf, 123)
        outs.append([tf(image=image, mask=label, rare_class=5)["mask"] for _ in range(20)])
    assert all((a == b).all() for a, b in zip(*outs))
    seed_transform(crop, 123)
    plain = sum(int((crop(image=image, mask=label)["mask"] == 5).sum()) > 4 for _ in range(20))
    retried = sum(int((m == 5).sum()) > 4 for m in outs[0])
    assert retried >= 15 and retried > plain  # P(success in 11 draws) ≈ 0.9


# --- rare class sampling: statistics and their cache ---------------------------------------------------------------
def _gta(root: Path, **kw: Any) -> GTA5:
    return GTA5(root, label_set="cityscapes19", **kw)


@pytest.fixture()
def gta_root(tmp_path: Path) -> Path:
    fakes.make_gta5(tmp_path / "GTA5", n=3)
    return tmp_path / "GTA5"


def test_class_pixel_counts_by_hand(gta_root: Path) -> None:
    ds = _gta(gta_root)
    stats = class_pixel_counts(ds)
    for i in range(3):
        # every fake label: 4 quadrants of 12×20 with distinct classes, one column of each replaced by 255
        expected = np.zeros(19, np.int64)
        for c in np.unique(fakes.truth(i)):
            if c != 255:
                expected[c] = 228
        assert stats.counts[i].tolist() == expected.tolist()
    assert stats.sizes.tolist() == [[24, 40]] * 3 and stats.names == ("00001", "00002", "00003")


def test_cache_is_reused_and_invalidated_by_a_changed_file_list(
    gta_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = class_pixel_counts(_gta(gta_root))
    cached = list(gta_root.glob("diga_class_pixel_counts_*.npz"))
    assert len(cached) == 1

    def no_reading(self: Any, sample: Any) -> np.ndarray:
        raise AssertionError("labels read although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(GTA5, "load_label", no_reading)
        again = class_pixel_counts(_gta(gta_root))
    assert again.key == first.key and (again.counts == first.counts).all()
    smaller = class_pixel_counts(_gta(gta_root, limit=2))  # another file list → another key → counted again
    assert smaller.key != first.key and smaller.counts.shape == (2, 19)
    assert (smaller.counts == first.counts[:2]).all()
    assert len(list(gta_root.glob("diga_class_pixel_counts_*.npz"))) == 2
    # a cache file whose content belongs to another file list is not trusted, even under the right name
    (gta_root / rcs_module.cache_file_name(first.key)).write_bytes(
        (gta_root / rcs_module.cache_file_name(smaller.key)).read_bytes()
    )
    assert class_pixel_counts(_gta(gta_root)).counts.shape == (3, 19)
    path = gta_root / rcs_module.cache_file_name(first.key)
    path.write_bytes(path.read_bytes()[:100])  # a truncated cache (e.g. copied half-way) is recounted, not an error
    assert (class_pixel_counts(_gta(gta_root)).counts == first.counts).all()


def test_a_label_file_rewritten_under_the_same_name_is_counted_again(gta_root: Path) -> None:
    first = class_pixel_counts(_gta(gta_root))
    label = _gta(gta_root).samples[0].label
    cv2.imwrite(str(label), np.full((24, 40), 7, np.uint8))  # labelId 7 = road (train-id 0) everywhere
    os.utime(label, ns=(1, 1))  # even with an old time stamp: the size changed
    second = class_pixel_counts(_gta(gta_root))
    assert second.key != first.key
    assert second.counts[0].tolist() == [24 * 40] + [0] * 18
    assert (second.counts[1:] == first.counts[1:]).all()


def test_cache_write_is_atomic_and_falls_back_when_the_root_is_read_only(
    gta_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _gta(gta_root)

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full while renaming")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)  # a crash at the rename: no partial cache file, no temp file left behind
        stats = class_pixel_counts(ds)
    assert stats.counts.shape == (3, 19)
    assert not list(gta_root.glob("*.npz")) and not list(gta_root.glob(".*.tmp"))

    real_write = rcs_module.atomic_write_bytes

    def read_only_root(path: Path, data: bytes) -> None:
        if Path(path).parent == gta_root:
            raise PermissionError(13, "read-only file system")
        real_write(path, data)

    monkeypatch.setattr(rcs_module, "atomic_write_bytes", read_only_root)
    fallback = tmp_path / "cache"
    class_pixel_counts(ds, fallback_cache_dir=fallback)
    assert len(list(fallback.glob("diga_class_pixel_counts_*.npz"))) == 1
    monkeypatch.setattr(GTA5, "load_label", lambda self, s: (_ for _ in ()).throw(AssertionError("not cached")))
    assert (class_pixel_counts(ds, fallback_cache_dir=fallback).counts == stats.counts).all()


# --- ImageNet feature distance -------------------------------------------------------------------------------------
def test_downscale_label_ratio_by_hand() -> None:
    rows = [[6, 6, 7, 7], [6, 6, 7, 255], [11, 11, 255, 255], [0, 0, 255, 255]]
    lab = torch.tensor(rows, dtype=torch.long).view(1, 1, 4, 4)
    # blocks: all 6 → 6; 3/4 seven → 7 (≥ 0.75); 2/4 eleven → 255; all void → 255
    assert downscale_label_ratio(lab, 2, 0.75, 19).tolist() == [[[6, 7], [255, 255]]]
    assert downscale_label_ratio(lab, 2, 0.8, 19).tolist() == [[[6, 255], [255, 255]]]
    assert thing_mask(lab, (2, 2)).tolist() == [[[True, True], [False, False]]]


def test_masked_feature_distance_by_hand() -> None:
    feat = torch.tensor([[[3.0, 0.0], [6.0, 1.0]], [[4.0, 0.0], [8.0, 0.0]]]).unsqueeze(0)  # distances 5 0 / 10 1
    zero = torch.zeros_like(feat)
    mask = torch.tensor([[[True, False], [True, False]]])
    assert masked_feature_distance(feat, zero, mask).item() == pytest.approx(7.5)
    assert masked_feature_distance(feat, zero).item() == pytest.approx(4.0)
    feat.requires_grad_(True)
    empty = masked_feature_distance(feat, zero, torch.zeros_like(mask))
    assert empty.item() == 0.0 and empty.requires_grad  # DAFormer gives NaN here (no gradient either)
    same = masked_feature_distance(feat, feat.detach(), mask)
    same.backward()
    assert torch.isfinite(feat.grad).all()  # zero distance: finite (zero) gradient


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.s1 = nn.Conv2d(3, 4, 4, stride=4)
        self.drop = nn.Dropout(0.5)
        self.s2 = nn.Conv2d(4, 4, 2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.s1(x)
        return [f1, self.s2(self.drop(f1))]


def test_feature_distance_module_freezes_a_copy_and_uses_the_last_stage() -> None:
    torch.manual_seed(0)
    enc = _Encoder()
    fd = ImageNetFeatureDistance(enc, num_classes=19)
    assert fd.weight == 0.005 and fd.classes == CITYSCAPES_THING_CLASSES
    assert all(not p.requires_grad for p in fd.encoder.parameters())
    fd.train()
    assert not fd.encoder.training  # dropout off whatever the LightningModule's mode
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        imnet = fd.encoder(x)[-1]
        enc.s2.weight.add_(1.0)  # training the student must not move the frozen copy
    assert torch.equal(fd.imagenet_features(x), imnet)
    offset = torch.tensor([0.3, 0.4, 0.0, 0.0]).view(1, 4, 1, 1)  # ‖offset‖ = 0.5 at every pixel
    student = [torch.zeros(2, 4, 8, 8), (imnet + offset).requires_grad_(True)]
    labels = torch.full((2, 32, 32), 255, dtype=torch.long)
    labels[0, :16, :16] = 11  # a person: 2×2 feature pixels of the 4×4 grid
    loss = fd(x, student, labels)
    assert loss.item() == pytest.approx(0.005 * 0.5, rel=1e-5)
    loss.backward()
    assert student[1].grad[1].abs().sum() == 0 and student[1].grad[0, :, :2, :2].abs().sum() > 0
    labels[0] = 8  # vegetation is stuff: nothing to compare, loss 0
    assert fd(x, student, labels).item() == 0.0


def test_thing_classes_by_name() -> None:
    # DAFormer's `imnet_feature_dist_classes` for Cityscapes-19
    assert thing_classes("cityscapes19") == CITYSCAPES_THING_CLASSES == (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    # SYNTHIA-16 drops terrain, truck, train: 19-ids 6 7 11 12 13 15 17 18 sit at 16-ids 6 7 10 11 12 13 14 15
    assert thing_classes("synthia16") == (6, 7, 10, 11, 12, 13, 14, 15)


# --- MIC masking ---------------------------------------------------------------------------------------------------
def test_block_mask_grid_and_seeded_generator() -> None:
    gen = BlockMaskGenerator(mask_ratio=0.7, mask_block_size=32)
    assert gen.grid_size(64, 64) == (2, 2)
    assert BlockMaskGenerator(0.7, 64).grid_size(96, 160) == (2, 2)  # round(1.5) = 2, round(2.5) = 2 (half to even)
    img = torch.rand(2, 3, 64, 64)
    m1 = gen(img, torch.Generator().manual_seed(3))
    m2 = gen(img, torch.Generator().manual_seed(3))
    assert torch.equal(m1, m2) and m1.shape == (2, 1, 64, 64)
    grid = torch.rand((2, 1, 2, 2), generator=torch.Generator().manual_seed(3))
    expected = (grid > 0.7).float().repeat_interleave(32, 2).repeat_interleave(32, 3)
    assert torch.equal(m1, expected)
    assert BlockMaskGenerator(0.0, 32)(img).all() and not BlockMaskGenerator(1.0, 32)(img).any()


def test_mask_images_fill() -> None:
    img = torch.ones(1, 3, 2, 2)
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    out = mask_images(img, mask)
    assert out[0, :, 0, 1].tolist() == [0.0, 0.0, 0.0] and out[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    mean = torch.tensor([0.485, 0.456, 0.406])
    out = mask_images(img, mask, fill=mean)
    assert out[0, :, 1, 0] == pytest.approx(mean.tolist()) and out[0, :, 1, 1].tolist() == [1.0, 1.0, 1.0]


def test_the_masked_view_colour_augments_the_target_only_when_asked() -> None:
    """MIC's `separatetrgaug` (Cityscapes) augments the target before masking it; `separate` (ACDC, Dark Zurich)
    masks the target as it is: the augmentation is not even called."""
    from diga.uda.masking import MaskedImageConsistency

    target, fill = torch.rand(1, 3, 8, 8), torch.zeros(3)
    calls = []

    def brighten(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x + 10

    masked = MaskedImageConsistency(1.0, mask_ratio=0.0, block_size=4).masked_view(target, brighten, fill, None)
    assert calls == [1] and torch.equal(masked, target + 10)
    plain = MaskedImageConsistency(1.0, mask_ratio=0.0, block_size=4, augment=False)
    assert torch.equal(plain.masked_view(target, brighten, fill, None), target) and calls == [1]


def test_masked_consistency_loss_by_hand() -> None:
    logits = torch.zeros(1, 2, 1, 1)  # equal logits, upsampled to 1×2: CE = ln 2 at both pixels
    label = torch.tensor([[[0, 255]]])
    weight = torch.tensor([[[0.5, 0.5]]])
    # (0.5·ln2 + 0) / 2 pixels (the ignored pixel counts in the mean, as in mmseg)
    assert masked_consistency_loss(logits, label, weight).item() == pytest.approx(0.25 * math.log(2))
    assert masked_consistency_loss(logits, label, weight, weight=2.0).item() == pytest.approx(0.5 * math.log(2))
    assert masked_consistency_loss(logits, label).item() == pytest.approx(0.5 * math.log(2))
    torch.manual_seed(0)
    z, y = torch.randn(2, 19, 32, 32), torch.randint(0, 19, (2, 32, 32))
    w = torch.rand(2, 32, 32)
    manual = (-(F.log_softmax(z, 1).gather(1, y[:, None])[:, 0]) * w).mean()
    assert masked_consistency_loss(z, y, w).item() == pytest.approx(manual.item(), rel=1e-6)


# --- confidence-weighted pseudo-labels -----------------------------------------------------------------------------
def _logits(confident: list[list[bool]]) -> torch.Tensor:
    """B×2×1×N logits: class 1 wins by 4 (p = σ(4) = 0.982 ≥ 0.968) where confident, class 0 by 1 (p = 0.731)."""
    c = torch.tensor(confident)
    z = torch.zeros(c.shape[0], 2, 1, c.shape[1])
    z[:, 1, 0] = torch.where(c, 4.0, 0.0)
    z[:, 0, 0] = torch.where(c, 0.0, 1.0)
    return z


def test_pseudo_weight_is_the_confident_share_of_the_batch() -> None:
    z = _logits([[True, True, True, False], [True, False, False, False]])
    label, weight = confidence_weighted_pseudo_labels(z)
    assert label.tolist() == [[[1, 1, 1, 0]], [[1, 0, 0, 0]]]  # argmax everywhere, no ignore
    assert weight.dtype == torch.float32 and torch.equal(weight, torch.full((2, 1, 4), 0.5))  # 4 of 8 pixels
    _, per_image = confidence_weighted_pseudo_labels(z, per_image=True)
    assert per_image[:, 0, 0].tolist() == [0.75, 0.25]
    _, exact = confidence_weighted_pseudo_labels(torch.zeros(1, 2, 1, 1), threshold=0.5)
    assert exact.item() == 1.0  # confidence ≥ τ counts (DAFormer's `ge`)


def test_pseudo_weight_row_crop_and_valid_mask() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 19, 32, 32) * 4
    _, base = confidence_weighted_pseudo_labels(z)
    _, cropped = confidence_weighted_pseudo_labels(z, ignore_top=3, ignore_bottom=5)
    assert (cropped[:, :3] == 0).all() and (cropped[:, -5:] == 0).all()
    assert torch.equal(cropped[:, 3:-5], base[:, 3:-5])  # the share itself is still over all pixels
    valid = torch.zeros(2, 1, 32, 32)
    valid[:, :, 4:, 2:-2] = 1
    _, masked = confidence_weighted_pseudo_labels(z, valid_mask=valid)
    assert torch.equal(masked, base * valid[:, 0])
    with pytest.raises(ValueError, match="not both"):
        confidence_weighted_pseudo_labels(z, ignore_top=1, valid_mask=valid)
    label, up = confidence_weighted_pseudo_labels(z[:, :, :8, :8], size=(16, 16))
    assert label.shape == up.shape == (2, 16, 16)


def test_crop_retry_forwards_the_random_state() -> None:
    seen: list[Any] = []

    class Inner:
        def __call__(self, **data: Any) -> dict[str, Any]:
            return data

        def set_random_state(self, np_rng: np.random.Generator, py_rng: random.Random) -> None:
            seen.append((np_rng, py_rng))

    seed_transform(RareClassCropRetry(Inner()), 1)
    assert len(seen) == 1
