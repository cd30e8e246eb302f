"""Tiny fake datasets written in the real on-disk layouts, with known label content.

Every fake label is built from a train-id map `T` (the "truth"), encoded into the dataset's raw id space with
the inverse of its mapping, so a test can assert that loading returns exactly `T`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from diga.data import labels as L

H, W = 24, 40
TINY_TOY = {"height": 32, "width": 64, "source_train": 8, "source_val": 4, "target_train": 8, "target_val": 4}


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
    if name.isdigit() and len(name) == 5:  # GTA5 frames are 1-based
        return int(name) - 1
    return int(name.lstrip("bm"))


def image(i: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(100 + i).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def encode(t: np.ndarray, to_train: dict[int, int], void_raw: int) -> np.ndarray:
    """Train-ids → raw ids with the inverse mapping (first raw id of each train id); ignore → `void_raw`."""
    inverse: dict[int, int] = {}
    for raw, tid in sorted(to_train.items()):
        inverse.setdefault(tid, raw)
    raw = np.full(t.shape, void_raw, dtype=np.int64)
    for tid, r in inverse.items():
        raw[t == tid] = r
    return raw


def save_png(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr.astype(np.uint8))
    if palette:
        img = img.convert("P")
        img.putpalette([v % 256 for v in range(768)])
    img.save(path)


def make_gta5(root: Path, n: int = 3) -> None:
    m = L.cityscapes_labelid_to_trainid("cityscapes19")
    for i in range(n):
        save_png(root / "images" / f"{i + 1:05d}.png", image(i))
        save_png(root / "labels" / f"{i + 1:05d}.png", encode(truth(i), m, 0), palette=True)


def make_cityscapes(root: Path, n_train: int = 4, n_val: int = 2) -> None:
    m = L.cityscapes_labelid_to_trainid("cityscapes19")
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            city = ["aachen", "bochum"][i % 2]
            stem = f"{city}_{i:06d}_000019"
            save_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image(i))
            save_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", encode(truth(i), m, 0))


def make_synthia(root: Path, n: int = 3) -> None:
    """16-bit RGBA label PNGs with the class id in channel 0 (written as the file's first channel)."""
    m = L.synthia_raw_to_trainid("cityscapes19")
    for i in range(n):
        save_png(root / "RGB" / f"{i:07d}.png", image(i))
        raw = encode(truth(i), m, 0).astype(np.uint16)
        rgba = np.stack([raw, np.full_like(raw, 7), np.full_like(raw, 9), np.full_like(raw, 65535)], axis=-1)
        path = root / "GT" / "LABELS" / f"{i:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rgba[:, :, [2, 1, 0, 3]])  # OpenCV writes BGRA: file channel 0 = our channel 0


def make_bdd(root: Path, n: int = 2) -> None:
    for i in range(n):
        img = Image.fromarray(image(i))
        (root / "images" / "val").mkdir(parents=True, exist_ok=True)
        img.save(root / "images" / "val" / f"b{i:04d}.jpg", quality=95)
        save_png(root / "gtFine" / "val" / f"b{i:04d}_train_id.png", truth(i))


def make_mapillary(root: Path, n: int = 2) -> None:
    m = L.mapillary_to_trainid("cityscapes19")
    for i in range(n):
        (root / "validation" / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image(i)).save(root / "validation" / "images" / f"m{i:04d}.jpg", quality=95)
        save_png(root / "validation" / "labels" / f"m{i:04d}.png", encode(truth(i), m, 65), palette=True)


def make_all(root: Path) -> dict[str, Path]:
    paths = {
        "gta5": root / "GTA5",
        "cityscapes": root / "cityscapes",
        "synthia": root / "RAND_CITYSCAPES",
        "bdd100k": root / "bdd100k",
        "mapillary": root / "mapillary",
    }
    make_gta5(paths["gta5"])
    make_cityscapes(paths["cityscapes"])
    make_synthia(paths["synthia"])
    make_bdd(paths["bdd100k"])
    make_mapillary(paths["mapillary"])
    return paths
