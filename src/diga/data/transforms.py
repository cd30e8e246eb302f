"""albumentations pipelines and per-worker seeding.

The geometric pipeline follows the reference loaders: resize the whole image to a
stream size (bicubic / nearest), random horizontal flip, then either a plain random crop or the
reference's `RandomSized_and_Crop` (independent width/height factors, whole-image resize when the result
is smaller than the crop). The latter has no albumentations equivalent, so `RandomScaleCrop` below is
written by hand as an albumentations DualTransform (it uses the Compose's seeded RNG).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from diga.data.labels import IGNORE_INDEX


class RandomScaleCrop(A.DualTransform):
    """REF `RandomSized_and_Crop`: scale W and H by independent U(lo, hi) factors, then crop to `size`.

    If the rescaled image is smaller than the crop in either dimension, the whole rescaled image is resized
    to the crop size (no padding) — exactly what the reference does.
    """

    def __init__(self, size: Sequence[int], scale: Sequence[float] = (0.7, 1.0), p: float = 1.0) -> None:
        super().__init__(p=p)
        self.size = (int(size[0]), int(size[1]))
        self.scale = (float(scale[0]), float(scale[1]))

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        sh, sw = self.py_random.uniform(*self.scale), self.py_random.uniform(*self.scale)
        nh, nw = int(sh * h), int(sw * w)
        th, tw = self.size
        if nh < th or nw < tw:
            return {"rh": th, "rw": tw, "y0": 0, "x0": 0}
        return {"rh": nh, "rw": nw, "y0": self.py_random.randint(0, nh - th), "x0": self.py_random.randint(0, nw - tw)}

    def _apply(self, img: np.ndarray, interp: int, rh: int, rw: int, y0: int, x0: int) -> np.ndarray:
        if img.shape[:2] != (rh, rw):
            img = cv2.resize(img, (rw, rh), interpolation=interp)
        th, tw = self.size
        return img[y0 : y0 + th, x0 : x0 + tw]

    def apply(self, img: np.ndarray, rh: int, rw: int, y0: int, x0: int, **params: Any) -> np.ndarray:
        return self._apply(img, cv2.INTER_LINEAR, rh, rw, y0, x0)

    def apply_to_mask(self, mask: np.ndarray, rh: int, rw: int, y0: int, x0: int, **params: Any) -> np.ndarray:
        return self._apply(mask, cv2.INTER_NEAREST, rh, rw, y0, x0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "scale")


class ResizeOrCrop(A.DualTransform):
    """REF `RandomCrop`: a uniform random crop, or a whole-image resize to the crop size if the image is smaller."""

    def __init__(self, size: Sequence[int], p: float = 1.0) -> None:
        super().__init__(p=p)
        self.size = (int(size[0]), int(size[1]))

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        th, tw = self.size
        if h < th or w < tw:
            return {"resize": True, "y0": 0, "x0": 0}
        return {"resize": False, "y0": self.py_random.randint(0, h - th), "x0": self.py_random.randint(0, w - tw)}

    def _apply(self, img: np.ndarray, interp: int, resize: bool, y0: int, x0: int) -> np.ndarray:
        th, tw = self.size
        if resize:
            return cv2.resize(img, (tw, th), interpolation=interp)
        return img[y0 : y0 + th, x0 : x0 + tw]

    def apply(self, img: np.ndarray, resize: bool, y0: int, x0: int, **params: Any) -> np.ndarray:
        return self._apply(img, cv2.INTER_LINEAR, resize, y0, x0)

    def apply_to_mask(self, mask: np.ndarray, resize: bool, y0: int, x0: int, **params: Any) -> np.ndarray:
        return self._apply(mask, cv2.INTER_NEAREST, resize, y0, x0)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size",)


def train_transform(
    crop_size: Sequence[int],
    resize: Sequence[int] | None = None,
    random_scale: Sequence[float] | None = (0.7, 1.0),
    hflip: float = 0.5,
) -> A.Compose:
    """Joint geometric augmentation for image, `mask` (GT), `pseudo` (pseudo-label) and `valid` (where the
    pseudo-label may be trusted: HRDA's margins, built at the native size and cropped with the image)."""
    ops: list[A.BasicTransform] = []
    if resize is not None:
        ops.append(
            A.Resize(
                int(resize[0]), int(resize[1]), interpolation=cv2.INTER_CUBIC, mask_interpolation=cv2.INTER_NEAREST
            )
        )
    if hflip:
        ops.append(A.HorizontalFlip(p=hflip))
    ops.append(RandomScaleCrop(crop_size, random_scale) if random_scale else ResizeOrCrop(crop_size))
    return A.Compose(ops, additional_targets={"pseudo": "mask", "valid": "mask"}, strict=True)


def eval_transform(resize: Sequence[int] | None = None, resize_label: bool = False) -> A.Compose | None:
    """Evaluation: optionally resize the image (and, for the reference's Mapillary protocol, the label too)."""
    if resize is None:
        return None
    h, w = int(resize[0]), int(resize[1])
    if resize_label:
        return A.Compose(
            [A.Resize(h, w, interpolation=cv2.INTER_CUBIC, mask_interpolation=cv2.INTER_NEAREST)],
            additional_targets={"pseudo": "mask"},
            strict=True,
        )
    return _ImageOnlyResize(h, w)


class _ImageOnlyResize:
    """Resize the image only; labels stay at native resolution (predictions are up-sampled to them)."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w

    def __call__(self, **data: Any) -> dict[str, Any]:
        data["image"] = cv2.resize(data["image"], (self.w, self.h), interpolation=cv2.INTER_CUBIC)
        return data


class ClassContentRetry:
    """REF source-loader retry: redraw a crop that shows too few classes, at most `max_draws`.

    Accept a crop if ≥3 label values (255 included) each cover > `min_fraction`, or exactly 2 do and 255 is
    not one of them. After `max_draws` failures the last crop is used.
    """

    def __init__(self, transform: A.Compose, max_draws: int = 5, min_fraction: float = 0.02) -> None:
        self.transform, self.max_draws, self.min_fraction = transform, max_draws, min_fraction

    def __call__(self, **data: Any) -> dict[str, Any]:
        out = data
        for _ in range(self.max_draws):
            out = self.transform(**data)
            if "mask" not in out or accept_crop(out["mask"], self.min_fraction):
                return out
        return out

    def set_random_state(self, np_rng: np.random.Generator, py_rng: random.Random) -> None:
        self.transform.set_random_state(np_rng, py_rng)


def accept_crop(label: np.ndarray, min_fraction: float = 0.02) -> bool:
    values, counts = np.unique(label, return_counts=True)
    big = values[counts / label.size > min_fraction]
    return len(big) >= 3 or (len(big) == 2 and IGNORE_INDEX not in big)


def seed_transform(transform: Any, seed: int) -> None:
    """Give a Compose (or a wrapper) its own RNG streams. albumentations 2.0.8 ignores global seeds."""
    if transform is not None and hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def worker_init_fn(worker_id: int) -> None:
    """Lightning's rank-aware worker seeding, then reseed the dataset's albumentations pipeline.

    OpenCV is set to one thread per worker: by default every worker process opens a thread per core, so 8 workers
    × 4 streams × 8 GPUs would run thousands of threads on a node and the loaders, not the GPUs, set the pace.
    """
    import cv2
    from lightning_fabric.utilities.rank_zero import rank_zero_only
    from lightning_fabric.utilities.seed import pl_worker_init_function

    cv2.setNumThreads(0)  # 0 = no OpenCV thread pool: the worker process is the unit of parallelism
    rank = getattr(rank_zero_only, "rank", 0) or 0
    pl_worker_init_function(worker_id, rank=rank)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        seed_transform(getattr(info.dataset, "transform", None), torch.initial_seed() % 2**32)
