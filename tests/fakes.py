"""Tiny fake datasets written in the real on-disk layouts (`diga.data.fake_trees`), with known label content.

Every fake label is built from a train-id map `T` (the "truth"), encoded into the dataset's raw id space with
the inverse of its mapping, so a test can assert that loading returns exactly `T`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diga.data import labels as L
from diga.data.fake_trees import Frame, Naming, write_cityscapes, write_gta5, write_trees

H, W = 24, 40
TINY_TOY = {"height": 32, "width": 64, "source_train": 8, "source_val": 4, "target_train": 8, "target_val": 4}
COUNTS = {"gta5": 3, "cityscapes_train": 4, "cityscapes_val": 2, "synthia": 3, "bdd100k": 2, "mapillary": 2,
          "acdc": 2, "dark_zurich": 2}  # fmt: skip
NAMING = Naming(cities=("aachen", "bochum"), bdd100k="b{i:04d}", mapillary="m{i:04d}", jpeg_quality=95)


def truth(i: int, num_classes: int = 19) -> np.ndarray:
    """A deterministic train-id map with several classes and an ignore stripe."""
    rng = np.random.default_rng(i)
    t = np.zeros((H, W), dtype=np.uint8)
    cls = rng.choice(num_classes, size=4, replace=False)
    t[: H // 2, : W // 2], t[: H // 2, W // 2 :], t[H // 2 :, : W // 2], t[H // 2 :, W // 2 :] = cls
    t[:, W // 2 - 1 : W // 2 + 1] = L.IGNORE_INDEX
    return t


def index_of(name: str) -> int:
    """The fake index `i` a sample was written from, recovered from its file name in any layout."""
    if name.startswith(("aachen_", "bochum_")):
        return int(name.split("_")[1])
    if "_frame_" in name:  # ACDC, Dark Zurich: <sequence>_frame_<i>_rgb_anon
        return int(name.split("_frame_")[1][:6])
    if name.isdigit() and len(name) == 5:  # GTA5 frames are 1-based
        return int(name) - 1
    return int(name.lstrip("bm"))


def image(i: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(100 + i).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def paint(dataset: str, split: str, i: int) -> Frame:
    """Frame `i` of every dataset and split: `image(i)` and `truth(i)`. SYNTHIA's instance channel holds 7, so a
    loader that reads the wrong channel returns the wrong classes."""
    return Frame(image(i), truth(i), np.full((H, W), 7, np.uint16))


def make_gta5(root: Path, n: int = 3) -> None:
    write_gta5(root, n, paint)


def make_cityscapes(root: Path, n_train: int = 4, n_val: int = 2) -> None:
    write_cityscapes(root, n_train, n_val, paint, NAMING)


def make_all(root: Path) -> dict[str, Path]:
    return write_trees(root, paint, COUNTS, NAMING)
