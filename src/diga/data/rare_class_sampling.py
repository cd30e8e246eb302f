"""Rare Class Sampling (DAFormer, Hoyer et al. 2022): draw source images by class, rare classes more often.

Every training sample first draws a class c ~ p(c) = softmax((1 − f_c) / T) over the classes that occur at all (f_c
= the class's share of all labelled source pixels), then an image uniformly among the images in which c covers more
than `min_pixels` pixels, then re-crops that image until the crop shows c (`RareClassCropRetry`).

Where DAFormer counts pixels (the rule behind `min_pixels`):
    * image lists: its dataset-conversion script counts train-ids on the *native* label maps (GTA5: 1914×1052) and
      keeps an image for class c when it has more than `min_pixels` = 3000 such pixels. `samples_with_class` counts on
      the native labels too (`dataset.load_label`) and scales the minimum in proportion to each label map's pixel
      count relative to GTA5's 1052×1914 (`reference_size`): identical to DAFormer on GTA5, and a resolution-free
      "more than 0.149 % of the image" elsewhere. DAFormer used the same unscaled 3000 on SYNTHIA's 1280×760 labels:
      the SYNTHIA baselines state it there (`rare_class_sampling.label_size: [760, 1280]`), which keeps DAFormer's
      count on the real files and scales it for smaller copies (the rehearsal's fake trees).
    * crops: the re-crop test counts the class in the *training crop*, after the resize to 1280×720 (GTA5 becomes
      1280×704), against `min_crop_ratio · min_pixels` = 0.5 · 3000. For another resize, scale the minimum with the
      resized image's pixel count relative to 704×1280 (`scale_min_pixels(3000, resize, DAFORMER_TRAIN_SIZE)`) —
      MIC does exactly this when it doubles the resolution (min_crop_ratio 0.5 → 2.0). SYNTHIA is not resized
      (`rare_class_sampling.train_size: [760, 1280]`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diga.data.samplers import StepSampler
from diga.utils.io import atomic_write_bytes

log = logging.getLogger(__name__)

DAFORMER_TEMPERATURE = 0.01
DAFORMER_MIN_PIXELS = 3000
DAFORMER_MIN_CROP_RATIO = 0.5
DAFORMER_LABEL_SIZE = (1052, 1914)  # (H, W) of the GTA5 label maps DAFormer counts `min_pixels` on
DAFORMER_TRAIN_SIZE = (704, 1280)  # (H, W) of GTA5 after DAFormer's Resize(1280×720, keep ratio): the crop test's scale
CACHE_VERSION = 2


@dataclass(frozen=True)
class ClassPixelStats:
    """Train-id pixel counts per labelled image (255 not counted), in dataset order."""

    names: tuple[str, ...]
    counts: np.ndarray  # N×C int64
    sizes: np.ndarray  # N×2 int64, (H, W) of each label map
    key: str = ""  # hash of the file list and label set the counts belong to

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[1])

    def class_totals(self) -> np.ndarray:
        """Pixels of every class over the whole dataset (the input of `rcs_class_probabilities`)."""
        return self.counts.sum(axis=0)


# --- statistics and their cache -----------------------------------------------------------------------------------
def stats_key(dataset: Any) -> str:
    """Hash of what the counts depend on: the label files (relative to the root) with their size and modification
    time, the label set and the id mapping. A label file rewritten under the same name (re-converted labels, a
    regenerated tree) changes the key, so stale counts are never reused."""
    root = Path(dataset.root)
    lut = getattr(dataset, "_lut", None)
    stamps = []
    for s in dataset.samples:
        st = os.stat(s.label) if s.label is not None else None
        stamps.append(None if st is None else [st.st_size, st.st_mtime_ns])
    desc = {
        "version": CACHE_VERSION,
        "dataset": type(dataset).__name__,
        "label_set": dataset.labels.name,
        "classes": list(dataset.labels.classes),
        "mapping": None if lut is None else hashlib.sha256(np.ascontiguousarray(lut).tobytes()).hexdigest(),
        "files": [_relative(s.label, root) for s in dataset.samples],
        "stamps": stamps,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def _relative(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def cache_file_name(key: str) -> str:
    return f"diga_class_pixel_counts_{key[:16]}.npz"


def class_pixel_counts(
    dataset: Any,
    fallback_cache_dir: str | Path | None = None,
    cache: bool = True,
    num_workers: int = 0,
    log_every: int = 1000,
) -> ClassPixelStats:
    """Per-image class pixel counts of a labelled `SegmentationDataset`, computed once and cached.

    The cache (`diga_class_pixel_counts_<hash>.npz`, written atomically) lives in the dataset root, or in
    `fallback_cache_dir` when the root is read-only. Its name and content carry `stats_key(dataset)`, so a changed
    file list, label set or id mapping never reuses stale counts. `num_workers` > 0 reads labels in threads.
    """
    key = stats_key(dataset)
    dirs = [Path(dataset.root)] + ([Path(fallback_cache_dir)] if fallback_cache_dir is not None else [])
    if cache:
        for d in dirs:
            stats = _load_cache(d / cache_file_name(key), key, dataset)
            if stats is not None:
                return stats
    stats = _count(dataset, key, num_workers, log_every)
    if cache:
        payload = _encode(stats)
        for d in dirs:
            try:
                atomic_write_bytes(d / cache_file_name(key), payload)
                log.info("class pixel counts of %r cached in %s", dataset, d / cache_file_name(key))
                break
            except OSError as e:
                log.warning("cannot cache class pixel counts in %s (%s)", d, e)
    return stats


def _count(dataset: Any, key: str, num_workers: int, log_every: int) -> ClassPixelStats:
    n, c = len(dataset.samples), dataset.num_classes
    counts = np.zeros((n, c), dtype=np.int64)
    sizes = np.zeros((n, 2), dtype=np.int64)
    log.info("counting class pixels of %d label maps of %r", n, dataset)
    start = time.monotonic()

    def one(i: int) -> tuple[int, np.ndarray, tuple[int, ...]]:
        lab = dataset.load_label(dataset.samples[i])
        return i, np.bincount(lab.ravel(), minlength=256)[:c], lab.shape

    pool = ThreadPoolExecutor(num_workers) if num_workers > 0 else None
    try:
        results = pool.map(one, range(n)) if pool is not None else map(one, range(n))
        for done, (i, cnt, shape) in enumerate(results, 1):
            counts[i], sizes[i] = cnt, shape[:2]
            if done % log_every == 0 or (done == n and n >= log_every):
                rate = done / max(time.monotonic() - start, 1e-9)
                log.info("class pixel counts: %d/%d label maps (%.0f/s, %.0f s left)", done, n, rate, (n - done) / rate)
    finally:
        if pool is not None:
            pool.shutdown()
    return ClassPixelStats(tuple(s.name for s in dataset.samples), counts, sizes, key)


def _encode(stats: ClassPixelStats) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, key=np.array(stats.key), names=np.array(stats.names), counts=stats.counts, sizes=stats.sizes)
    return buf.getvalue()


def _load_cache(path: Path, key: str, dataset: Any) -> ClassPixelStats | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stats = ClassPixelStats(tuple(str(s) for s in z["names"]), z["counts"], z["sizes"], str(z["key"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        log.warning("ignoring unreadable class pixel count cache %s (%s)", path, e)
        return None
    if stats.key != key or stats.counts.shape != (len(dataset.samples), dataset.num_classes):
        log.warning("ignoring class pixel count cache %s: it belongs to another file list or label set", path)
        return None
    return stats


# --- class probabilities and image lists ---------------------------------------------------------------------------
def rcs_class_probabilities(
    class_frequencies: Sequence[float] | np.ndarray, temperature: float = DAFORMER_TEMPERATURE
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, p): p = softmax((1 − f) / T) over the classes with non-zero frequency (DAFormer's RCS).

    `class_frequencies` may be pixel counts or frequencies (they are normalised over the present classes). Classes
    that never occur get no probability at all — they could never be found in an image. Returned in class order.
    """
    f = np.asarray(class_frequencies, dtype=np.float64)
    classes = np.flatnonzero(f > 0)
    if classes.size == 0:
        raise ValueError("rare class sampling needs at least one class with labelled pixels")
    freq = f[classes] / f[classes].sum()
    z = (1.0 - freq) / temperature
    p = np.exp(z - z.max())
    return classes, p / p.sum()


def scale_min_pixels(min_pixels: float, size: Sequence[int], reference_size: Sequence[int] | None) -> float:
    """`min_pixels` (given at `reference_size`) for an image of `size` (H, W): proportional to the pixel count."""
    if reference_size is None:
        return float(min_pixels)
    return float(min_pixels) * (int(size[0]) * int(size[1])) / (int(reference_size[0]) * int(reference_size[1]))


def samples_with_class(
    stats: ClassPixelStats,
    classes: Sequence[int] | np.ndarray,
    min_pixels: float = DAFORMER_MIN_PIXELS,
    reference_size: Sequence[int] | None = DAFORMER_LABEL_SIZE,
) -> dict[int, np.ndarray]:
    """Class → indices of the images where it covers more than `min_pixels` (scaled per image, see module doc).

    DAFormer asserts that every sampled class has at least one such image; so does this (ValueError).
    """
    area = stats.sizes[:, 0] * stats.sizes[:, 1]
    if reference_size is None:
        thresh = np.full(len(area), float(min_pixels))
    else:
        thresh = float(min_pixels) * area / (int(reference_size[0]) * int(reference_size[1]))
    out: dict[int, np.ndarray] = {}
    for c in classes:
        idx = np.flatnonzero(stats.counts[:, int(c)] > thresh)
        if idx.size == 0:
            raise ValueError(
                f"class {int(c)} covers more than the minimum of {min_pixels} pixels (at {reference_size}) in no "
                "image; lower min_pixels or drop the class from rare class sampling"
            )
        out[int(c)] = idx
    return out


# --- sampler and crop retry ----------------------------------------------------------------------------------------
class RareClassSampler(StepSampler):
    """A `StepSampler` whose sample at global position p is a rare-class draw from the seed sequence (seed, p).

    Yields `(index, augmentation_seed, class)`. Like `StepSampler` the whole run's order is a pure function of the
    seed and the position (resumable at any step), and DDP rank r takes the positions p ≡ r (mod W).
    """

    def __init__(
        self,
        classes: Sequence[int] | np.ndarray,
        probabilities: Sequence[float] | np.ndarray,
        samples_with_class: Mapping[int, Sequence[int] | np.ndarray],
        batch_size: int,
        total_steps: int,
        seed: int,
        start_step: Callable[[], int] = lambda: 0,
    ) -> None:
        num_samples = len({int(i) for v in samples_with_class.values() for i in v})
        super().__init__(num_samples, batch_size, total_steps, seed, start_step)
        self.classes = np.asarray(classes, dtype=np.int64)
        p = np.asarray(probabilities, dtype=np.float64)
        if p.shape != self.classes.shape or (p < 0).any() or p.sum() <= 0:
            raise ValueError("RareClassSampler: one non-negative probability per class is needed")
        self.cdf = np.cumsum(p / p.sum())
        self.files = {int(c): np.asarray(samples_with_class[int(c)], dtype=np.int64) for c in self.classes}
        for c, f in self.files.items():
            if f.size == 0:
                raise ValueError(f"RareClassSampler: class {c} has no image to draw")

    @classmethod
    def from_stats(
        cls,
        stats: ClassPixelStats,
        batch_size: int,
        total_steps: int,
        seed: int,
        start_step: Callable[[], int] = lambda: 0,
        temperature: float = DAFORMER_TEMPERATURE,
        min_pixels: float = DAFORMER_MIN_PIXELS,
        reference_size: Sequence[int] | None = DAFORMER_LABEL_SIZE,
    ) -> RareClassSampler:
        classes, p = rcs_class_probabilities(stats.class_totals(), temperature)
        files = samples_with_class(stats, classes, min_pixels, reference_size)
        return cls(classes, p, files, batch_size, total_steps, seed, start_step)

    def draw(self, position: int) -> tuple[int, int, int]:
        """(index, augmentation seed, class) of global position `position`."""
        rng = np.random.default_rng([self.seed, position])
        k = min(int(np.searchsorted(self.cdf, rng.random(), side="right")), len(self.classes) - 1)
        c = int(self.classes[k])
        files = self.files[c]
        index = int(files[rng.integers(len(files))])
        return index, int(rng.integers(2**31)), c

    def __iter__(self) -> Iterator[tuple[int, int, int]]:  # type: ignore[override]
        for p in self._positions():
            yield self.draw(p)


class RareClassCropRetry:
    """DAFormer's re-crop: redraw the crop up to `max_redraws` times until the rare class has > the minimum pixels.

    Called like the wrapped albumentations transform plus `rare_class=c` (None = no retry). The test is DAFormer's:
    pixels of c in `mask` > `min_crop_ratio · min_pixels`; after `max_redraws` failed tests the last (untested)
    redraw is returned, as in DAFormer. `min_pixels` is at the resolution the crops are taken from (see module doc).
    Deterministic given the wrapped transform's seeded RNG (`set_random_state`).
    """

    def __init__(
        self,
        transform: Callable[..., dict[str, Any]],
        min_pixels: float = DAFORMER_MIN_PIXELS,
        min_crop_ratio: float = DAFORMER_MIN_CROP_RATIO,
        max_redraws: int = 10,
    ) -> None:
        self.transform, self.min_pixels, self.min_crop_ratio = transform, min_pixels, min_crop_ratio
        self.max_redraws = max_redraws

    def __call__(self, rare_class: int | None = None, **data: Any) -> dict[str, Any]:
        out = self.transform(**data)
        if rare_class is None or self.min_crop_ratio <= 0 or "mask" not in out:
            return out
        threshold = self.min_pixels * self.min_crop_ratio
        for _ in range(self.max_redraws):
            if int(np.count_nonzero(np.asarray(out["mask"]) == rare_class)) > threshold:
                break
            out = self.transform(**data)
        return out

    def set_random_state(self, np_rng: np.random.Generator, py_rng: random.Random) -> None:
        if hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(np_rng, py_rng)


def default_fallback_cache_dir() -> Path:
    """A per-user cache folder for datasets on read-only storage ($XDG_CACHE_HOME/diga/class_pixel_counts)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diga" / "class_pixel_counts"
