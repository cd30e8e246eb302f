"""Fake GTA5 / Cityscapes / SYNTHIA / BDD100K / Mapillary / ACDC / Dark Zurich trees in the official on-disk
layouts, at any size.

So that every loader, id mapping and evaluation protocol can run on files shaped like the real downloads (folder
layout, names, formats, id spaces) without the datasets: the tests write 24×40 frames, the rehearsal and the
benchmarks street scenes at the official image sizes (`write_street_trees`). What a frame shows comes from a
`Painter`; the writers only know where each dataset keeps its files and how it encodes labels. Every label is
written from a train-id map with the inverse of the dataset's raw → train-id mapping, so what a loader returns can
be compared with the map it came from.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from diga.data import labels as L

FOLDERS = {"gta5": "GTA5", "cityscapes": "cityscapes", "synthia": "RAND_CITYSCAPES", "bdd100k": "bdd100k",
           "mapillary": "mapillary", "acdc": "acdc", "dark_zurich": "dark_zurich",
           "my_images": "my_images"}  # fmt: skip


class Frame(NamedTuple):
    """One fake sample: what the image shows and its 19-class train-id map (255 = ignore)."""

    image: np.ndarray  # H×W×3 uint8 RGB
    train_ids: np.ndarray  # H×W uint8
    instance: np.ndarray | None = None  # SYNTHIA's second label channel (None: zeros); other layouts have none


Painter = Callable[[str, str, int], Frame]  # (dataset key of FOLDERS, split, index) → the frame to write


@dataclass(frozen=True)
class Naming:
    """File names where the official ones are arbitrary (and the JPEG quality): tests keep their short names."""

    cities: tuple[str, ...] = ("aachen", "bochum", "frankfurt")  # Cityscapes frame i is in city i mod len
    bdd100k: str = "7d{i:06d}-bdd"
    mapillary: str = "M{i:04d}vistas"
    jpeg_quality: int = 90


def encode(t: np.ndarray, to_train: dict[int, int], void: int, dtype: type = np.uint8) -> np.ndarray:
    """Train-ids → raw ids with the inverse mapping (the first raw id of each train id); ignore → `void`."""
    inverse: dict[int, int] = {}
    for raw, tid in sorted(to_train.items()):
        inverse.setdefault(tid, raw)
    out = np.full(t.shape, void, dtype=np.int64)
    for tid, r in inverse.items():
        out[t == tid] = r
    return out.astype(dtype)


def save_png(path: Path, arr: np.ndarray, palette: bool = False) -> None:
    """An 8-bit PNG (palettised like the GTA5 and Mapillary labels when `palette`), folders made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr.astype(np.uint8))
    if palette:
        img = img.convert("P")
        img.putpalette([v % 256 for v in range(768)])
    img.save(path)


def save_jpg(path: Path, arr: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=quality)


def write_gta5(root: Path, n: int, paint: Painter) -> None:
    """`images/00001.png`, `labels/00001.png` (1-based; palettised Cityscapes labelIds)."""
    to_train = L.cityscapes_labelid_to_trainid("cityscapes19")
    for i in range(n):
        f = paint("gta5", "train", i)
        save_png(root / "images" / f"{i + 1:05d}.png", f.image)
        save_png(root / "labels" / f"{i + 1:05d}.png", encode(f.train_ids, to_train, 0), palette=True)


def write_cityscapes(root: Path, n_train: int, n_val: int, paint: Painter, naming: Naming = Naming()) -> None:
    """`leftImg8bit/<split>/<city>/<city>_<i>_000019_leftImg8bit.png` and its `gtFine_labelIds.png`."""
    to_train = L.cityscapes_labelid_to_trainid("cityscapes19")
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            f = paint("cityscapes", split, i)
            city = naming.cities[i % len(naming.cities)]
            stem = f"{city}_{i:06d}_000019"
            save_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", f.image)
            save_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", encode(f.train_ids, to_train, 0))


def write_synthia(root: Path, n: int, paint: Painter) -> None:
    """`RGB/0000000.png` and 16-bit 4-channel `GT/LABELS/0000000.png`, class id in the file's first channel and the
    instance id in the second (as RAND_CITYSCAPES ships)."""
    to_train = L.synthia_raw_to_trainid("cityscapes19")
    for i in range(n):
        f = paint("synthia", "train", i)
        save_png(root / "RGB" / f"{i:07d}.png", f.image)
        raw = encode(f.train_ids, to_train, 0, np.uint16)
        instance = np.zeros_like(raw) if f.instance is None else f.instance.astype(np.uint16)
        channels = np.stack([raw, instance, np.zeros_like(raw), np.full_like(raw, 65535)], axis=-1)
        path = root / "GT" / "LABELS" / f"{i:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), channels[:, :, [2, 1, 0, 3]])  # OpenCV writes BGRA: file channel 0 = our channel 0
    write_synthia_split_lists(root, n)


def synthia_val_frame(i: int) -> bool:
    """The fake trees' stand-in for RobustNet's random 70/30 SYNTHIA split: frames with i mod 10 in {0, 3, 6}."""
    return i % 10 in (0, 3, 6)


def write_synthia_split_lists(root: Path, n: int) -> None:
    """`synthia_split_{train,val}.txt` as RobustNet ships them (one `0000000.png` per line, ascending), for the fake
    frames: the files a user copies next to the real SYNTHIA (the frames themselves are RobustNet's draw)."""
    for part, chosen in (("train", False), ("val", True)):
        names = [f"{i:07d}.png" for i in range(n) if synthia_val_frame(i) == chosen]
        (root / f"synthia_split_{part}.txt").write_text("".join(f"{name}\n" for name in names))


def write_bdd100k(root: Path, n: int, paint: Painter, naming: Naming = Naming()) -> None:
    """`images/val/<name>.jpg` and `gtFine/val/<name>_train_id.png` (labels are train-ids already)."""
    for i in range(n):
        f = paint("bdd100k", "val", i)
        name = naming.bdd100k.format(i=i)
        save_jpg(root / "images" / "val" / f"{name}.jpg", f.image, naming.jpeg_quality)
        save_png(root / "gtFine" / "val" / f"{name}_train_id.png", f.train_ids)


def write_mapillary(root: Path, n: int, paint: Painter, naming: Naming = Naming()) -> None:
    """`validation/images/<name>.jpg` and palettised `validation/labels/<name>.png` in the 66 Vistas ids."""
    to_train = L.mapillary_to_trainid("cityscapes19")
    for i in range(n):
        f = paint("mapillary", "validation", i)
        name = naming.mapillary.format(i=i)
        save_jpg(root / "validation" / "images" / f"{name}.jpg", f.image, naming.jpeg_quality)
        save_png(root / "validation" / "labels" / f"{name}.png", encode(f.train_ids, to_train, 65), palette=True)


ACDC_SEQUENCES = {"fog": "GOPR0475", "night": "GOPR0351", "rain": "GOPR0400", "snow": "GOPR0122"}
DARK_ZURICH_SEQUENCES = {
    ("train", "day"): "GOPR0348",
    ("train", "twilight"): "GOPR0349",
    ("train", "night"): "GOPR0351",
    ("val", "night"): "GOPR0356",
    ("test", "night"): "GOPR0364",
}


def write_acdc(root: Path, n: int, paint: Painter) -> None:
    """`n` frames per condition and split, `rgb_anon/<condition>/<split>/<sequence>/<sequence>_frame_<i>_rgb_anon.png`
    and `gt/<condition>/<split>/…_gt_labelTrainIds.png` (train and val; test labels are withheld), and a day-time
    reference image in `<split>_ref` that no loader may read."""
    for condition, sequence in ACDC_SEQUENCES.items():
        for split in ("train", "val", "test"):
            for i in range(n):
                f = paint("acdc", f"{condition}/{split}", i)
                stem = f"{sequence}_frame_{i:06d}"
                save_png(root / "rgb_anon" / condition / split / sequence / f"{stem}_rgb_anon.png", f.image)
                if split != "test":
                    save_png(root / "gt" / condition / split / sequence / f"{stem}_gt_labelTrainIds.png", f.train_ids)
            reference = paint("acdc", f"{condition}/{split}_ref", 0).image
            name = f"{sequence}_frame_000000_rgb_ref_anon.png"
            save_png(root / "rgb_anon" / condition / f"{split}_ref" / sequence / name, reference)


def write_dark_zurich(root: Path, n: int, paint: Painter) -> None:
    """`n` frames per split and time of day: `rgb_anon/<split>/<time>/<sequence>/<sequence>_frame_<i>_rgb_anon.png`,
    `gt/val/night/…_gt_labelTrainIds.png` for val, and a reference image in `val_ref` that no loader may read."""
    for (split, time), sequence in DARK_ZURICH_SEQUENCES.items():
        for i in range(n):
            f = paint("dark_zurich", f"{split}/{time}", i)
            stem = f"{sequence}_frame_{i:06d}"
            save_png(root / "rgb_anon" / split / time / sequence / f"{stem}_rgb_anon.png", f.image)
            if split == "val":
                save_png(root / "gt" / split / time / sequence / f"{stem}_gt_labelTrainIds.png", f.train_ids)
    reference = paint("dark_zurich", "val_ref/day", 0).image
    save_png(
        root / "rgb_anon" / "val_ref" / "day" / "GOPR0356_ref" / "GOPR0356_frame_000000_ref_rgb_anon.png", reference
    )


def write_image_folder(root: Path, n: int, paint: Painter) -> None:
    """A user's own camera folder (`data=folder`): `n` unlabelled images in nested folders, JPEG and PNG alternating,
    at the sizes the painter gives (mixed)."""
    for i in range(n):
        f = paint("my_images", "train", i)
        folder = root / ("cam_a" if i % 2 == 0 else "cam_b/day")
        if i % 2:
            save_jpg(folder / f"{i:04d}.jpg", f.image, quality=90)
        else:
            save_png(folder / f"{i:04d}.png", f.image)


def write_trees(root: Path, paint: Painter, counts: dict[str, int], naming: Naming = Naming()) -> dict[str, Path]:
    """Every dataset under `root` (`counts`: gta5, cityscapes_train, cityscapes_val, synthia, bdd100k, mapillary; and
    only when given: acdc and dark_zurich per condition or time of day and split, my_images, a folder of one's own
    images); returns their roots by FOLDERS key."""
    paths = {key: root / folder for key, folder in FOLDERS.items()}
    write_gta5(paths["gta5"], counts["gta5"], paint)
    write_cityscapes(paths["cityscapes"], counts["cityscapes_train"], counts["cityscapes_val"], paint, naming)
    write_synthia(paths["synthia"], counts["synthia"], paint)
    write_bdd100k(paths["bdd100k"], counts["bdd100k"], paint, naming)
    write_mapillary(paths["mapillary"], counts["mapillary"], paint, naming)
    if counts.get("acdc"):
        write_acdc(paths["acdc"], counts["acdc"], paint)
    if counts.get("dark_zurich"):
        write_dark_zurich(paths["dark_zurich"], counts["dark_zurich"], paint)
    if counts.get("my_images"):
        write_image_folder(paths["my_images"], counts["my_images"], paint)
    return paths


# --- street scenes at the official sizes (the rehearsal's and the benchmarks' trees) ------------------------------
SIZES = {  # (height, width) of the real files
    "gta5": [(1052, 1914)],
    "cityscapes": [(1024, 2048)],
    "synthia": [(760, 1280)],
    "bdd100k": [(720, 1280)],
    "mapillary": [(3024, 4032), (2448, 3264)],  # Vistas images come in many sizes; two common phone sizes
    "acdc": [(1080, 1920)],
    "dark_zurich": [(1080, 1920)],
    "my_images": [(1080, 1920), (960, 1280)],  # a user's cameras: two sizes in one folder
}
GENERATOR_VERSION = 2  # bump when scene() changes: trees written by an older generator are rewritten
STREET_COUNTS = {"gta5": 6, "cityscapes_train": 32, "cityscapes_val": 2, "synthia": 6, "bdd100k": 2, "mapillary": 2,
                 "acdc": 2, "dark_zurich": 2, "my_images": 4}  # fmt: skip
_SEED_KEY = {"gta5": 1, "cityscapes": 2, "synthia": 3, "bdd100k": 4, "mapillary": 5, "acdc": 6,
             "dark_zurich": 7, "my_images": 8}  # fmt: skip  # per dataset: own RNG streams
_ID = {name: i for i, name in enumerate(L.CITYSCAPES_19)}
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS = (
    _ID[c] for c in ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                     "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus")
)  # fmt: skip


def scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A street scene as a 19-class train-id map (sky, buildings, vegetation, road, sidewalk, poles, signs, cars,
    people), so the class-content crop retry, the pseudo-labels and the centroids all see several classes."""
    t = np.full((h, w), BUILDING, np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.5))
    t[: int(horizon * rng.uniform(0.3, 0.7))] = SKY
    for _ in range(rng.integers(2, 5)):  # trees and walls between buildings
        x0, bw = int(rng.uniform(0, w)), int(w * rng.uniform(0.05, 0.2))
        t[int(horizon * 0.2) : horizon, x0 : x0 + bw] = rng.choice([VEG, WALL, FENCE])
    t[horizon:] = ROAD
    t[horizon : horizon + int(h * 0.08), : int(w * rng.uniform(0.1, 0.3))] = SIDEWALK
    t[horizon : horizon + int(h * 0.06), int(w * rng.uniform(0.7, 0.9)) :] = TERRAIN
    for _ in range(rng.integers(2, 5)):  # poles with a sign or a light on top
        x0, pw = int(rng.uniform(0, w)), max(2, w // 150)
        top = int(horizon * rng.uniform(0.3, 0.7))
        t[top:horizon, x0 : x0 + pw] = POLE
        t[top : top + h // 30, x0 - w // 100 : x0 + w // 100] = rng.choice([SIGN, LIGHT])
    for cls in (SIGN, LIGHT):  # one of each close to the camera: every class covers > 3000 px in some real frame
        x0, sh, sw = int(rng.uniform(0, w * 0.9)), h // 10, w // 25
        t[int(horizon * 0.3) : int(horizon * 0.3) + sh, x0 : x0 + sw] = cls
    for _ in range(rng.integers(2, 6)):  # vehicles and people on the road
        cls = rng.choice([CAR, CAR, TRUCK, BUS, PERSON, RIDER])
        ch = int(h * (rng.uniform(0.15, 0.3) if cls in (PERSON, RIDER) else rng.uniform(0.08, 0.2)))
        cw = int(ch * (0.4 if cls in (PERSON, RIDER) else rng.uniform(1.5, 2.5)))
        y0 = int(rng.uniform(horizon, h - ch)) if h - ch > horizon else horizon
        x0 = int(rng.uniform(0, max(1, w - cw)))
        t[y0 : y0 + ch, x0 : x0 + cw] = cls
    return t


def render(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB image of a train-id map: Cityscapes class colours, shifted per image, plus texture noise."""
    palette = np.asarray(L.CITYSCAPES_19_PALETTE, np.int16)
    shift = rng.integers(-25, 25, size=3)
    img = palette[np.minimum(t, 18)] + shift + rng.normal(0, 12, size=(*t.shape, 3)).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def street_painter(scale: float = 1.0, seed: int = 0) -> Painter:
    """Street scenes at the official sizes × `scale` (at least 32 px a side), each from its own seeded RNG."""

    def paint(dataset: str, split: str, i: int) -> Frame:
        key = [seed, _SEED_KEY[dataset], i, *([split == "val"] if dataset == "cityscapes" else [])]
        if dataset in ("acdc", "dark_zurich"):  # one stream per condition (time of day) and split
            key.append(zlib.crc32(split.encode()))
        rng = np.random.default_rng(key)
        h, w = SIZES[dataset][i % len(SIZES[dataset])]
        t = scene(max(32, round(h * scale)), max(32, round(w * scale)), rng)
        image = render(t, rng)
        instance = rng.integers(0, 1000, size=t.shape) if dataset == "synthia" else None
        return Frame(image, t, instance)

    return paint


def write_street_trees(root: Path, scale: float = 1.0, counts: dict[str, int] | None = None) -> dict[str, Path]:
    """Every dataset under `root` as street scenes (skipped when already complete); returns their roots."""
    c = {**STREET_COUNTS, **(counts or {})}
    marker = root / f".complete-v{GENERATOR_VERSION}-{scale}-{'-'.join(str(v) for v in c.values())}"
    if marker.is_file():
        return {key: root / folder for key, folder in FOLDERS.items()}
    paths = write_trees(root, street_painter(scale), c)
    marker.write_text("ok\n")
    return paths
