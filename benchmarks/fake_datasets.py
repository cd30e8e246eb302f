"""Fake GTA5 / Cityscapes / SYNTHIA / BDD100K / Mapillary trees in the official layouts at the official image sizes.

For the rehearsal of the real experiments: every loader, resize stream, label mapping and evaluation protocol runs
on files shaped exactly like the real downloads (sizes, formats, id spaces, folder layout), without the datasets.
Images are procedural street scenes (sky, buildings, vegetation, road, sidewalk, poles, signs, cars, people) with
per-class colours and texture noise, so the class-content crop retry, the pseudo-labels and the centroids all see
several classes; labels are written in each dataset's raw id space (GTA5/Cityscapes labelIds, SYNTHIA's 16-bit
channel, BDD train-ids, Mapillary's 66 Vistas ids). Also writes random-init weight files in the layouts diga loads.
`scale` shrinks every size (the CI rehearsal runs at 1/8).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from diga.data import labels as L

# (height, width) of the real files
SIZES = {
    "gta5": [(1052, 1914)],
    "cityscapes": [(1024, 2048)],
    "synthia": [(760, 1280)],
    "bdd100k": [(720, 1280)],
    "mapillary": [(3024, 4032), (2448, 3264)],  # Vistas images come in many sizes; two common phone sizes
}
GENERATOR_VERSION = 2  # bump when scene() changes: trees written by an older generator are rewritten
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS = range(16)


def scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A street scene as a 19-class train-id map."""
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


def _to_raw(t: np.ndarray, to_train: dict[int, int], void: int, dtype: type = np.uint8) -> np.ndarray:
    inverse: dict[int, int] = {}
    for raw, tid in sorted(to_train.items()):
        inverse.setdefault(tid, raw)
    raw = np.full(t.shape, void, dtype=np.int64)
    for tid, r in inverse.items():
        raw[t == tid] = r
    return raw.astype(dtype)


def _save(path: Path, arr: np.ndarray, palette: bool = False, quality: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if palette:
        img = img.convert("P")
        img.putpalette([v % 256 for v in range(768)])
    img.save(path, **({"quality": quality} if quality else {}))


def _sized(name: str, i: int, scale: float) -> tuple[int, int]:
    h, w = SIZES[name][i % len(SIZES[name])]
    return max(32, round(h * scale)), max(32, round(w * scale))


def write_gta5(root: Path, n: int, scale: float = 1.0, seed: int = 0) -> None:
    to_train = L.cityscapes_labelid_to_trainid("cityscapes19")
    for i in range(n):
        rng = np.random.default_rng([seed, 1, i])
        t = scene(*_sized("gta5", i, scale), rng)
        _save(root / "images" / f"{i + 1:05d}.png", render(t, rng))
        _save(root / "labels" / f"{i + 1:05d}.png", _to_raw(t, to_train, 0), palette=True)


def write_cityscapes(root: Path, n_train: int, n_val: int, scale: float = 1.0, seed: int = 0) -> None:
    to_train = L.cityscapes_labelid_to_trainid("cityscapes19")
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            rng = np.random.default_rng([seed, 2, i, split == "val"])
            t = scene(*_sized("cityscapes", i, scale), rng)
            city = ("aachen", "bochum", "frankfurt")[i % 3]
            stem = f"{city}_{i:06d}_000019"
            _save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", render(t, rng))
            _save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", _to_raw(t, to_train, 0))


def write_synthia(root: Path, n: int, scale: float = 1.0, seed: int = 0) -> None:
    """RGB PNGs and 16-bit 4-channel label PNGs, class id in the file's first channel (as RAND_CITYSCAPES ships)."""
    to_train = L.synthia_raw_to_trainid("cityscapes19")
    for i in range(n):
        rng = np.random.default_rng([seed, 3, i])
        t = scene(*_sized("synthia", i, scale), rng)
        _save(root / "RGB" / f"{i:07d}.png", render(t, rng))
        raw = _to_raw(t, to_train, 0, np.uint16)
        instance = rng.integers(0, 1000, size=raw.shape).astype(np.uint16)
        channels = np.stack([raw, instance, np.zeros_like(raw), np.full_like(raw, 65535)], axis=-1)
        path = root / "GT" / "LABELS" / f"{i:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), channels[:, :, [2, 1, 0, 3]])  # OpenCV writes BGRA


def write_bdd100k(root: Path, n: int, scale: float = 1.0, seed: int = 0) -> None:
    for i in range(n):
        rng = np.random.default_rng([seed, 4, i])
        t = scene(*_sized("bdd100k", i, scale), rng)
        name = f"7d{i:06d}-bdd"
        _save(root / "images" / "val" / f"{name}.jpg", render(t, rng), quality=90)
        _save(root / "gtFine" / "val" / f"{name}_train_id.png", t)


def write_mapillary(root: Path, n: int, scale: float = 1.0, seed: int = 0) -> None:
    to_train = L.mapillary_to_trainid("cityscapes19")
    for i in range(n):
        rng = np.random.default_rng([seed, 5, i])
        t = scene(*_sized("mapillary", i, scale), rng)
        name = f"M{i:04d}vistas"
        _save(root / "validation" / "images" / f"{name}.jpg", render(t, rng), quality=90)
        _save(root / "validation" / "labels" / f"{name}.png", _to_raw(t, to_train, 65), palette=True)


def write_all(root: Path, scale: float = 1.0, counts: dict[str, int] | None = None) -> dict[str, Path]:
    """Every dataset under `root` (skipped when already complete); returns their roots."""
    c = {"gta5": 6, "cityscapes_train": 32, "cityscapes_val": 2, "synthia": 6, "bdd100k": 2, "mapillary": 2,
         **(counts or {})}  # fmt: skip
    paths = {"gta5": root / "GTA5", "cityscapes": root / "cityscapes", "synthia": root / "RAND_CITYSCAPES",
             "bdd100k": root / "bdd100k", "mapillary": root / "mapillary"}  # fmt: skip
    marker = root / f".complete-v{GENERATOR_VERSION}-{scale}-{'-'.join(str(v) for v in c.values())}"
    if marker.is_file():
        return paths
    write_gta5(paths["gta5"], c["gta5"], scale)
    write_cityscapes(paths["cityscapes"], c["cityscapes_train"], c["cityscapes_val"], scale)
    write_synthia(paths["synthia"], c["synthia"], scale)
    write_bdd100k(paths["bdd100k"], c["bdd100k"], scale)
    write_mapillary(paths["mapillary"], c["mapillary"], scale)
    marker.write_text("ok\n")
    return paths


def write_weights(folder: Path) -> dict[str, Path]:
    """Random-init weight files in layouts diga reads: MiT-B0 (timm pvt_v2 layout), ResNet-18 (timm), VGG-19
    (torchvision `vgg19-dcbb9e9d.pth`). They exercise the loading code, not ImageNet features."""
    import timm
    from torchvision.models import vgg19

    folder.mkdir(parents=True, exist_ok=True)
    files = {"mit_b0": folder / "mit_b0.pth", "resnet18": folder / "resnet18.pth",
             "vgg19": folder / "vgg19-dcbb9e9d.pth"}  # fmt: skip
    torch.manual_seed(0)
    if not files["mit_b0"].is_file():
        torch.save(timm.create_model("pvt_v2_b0", mlp_ratios=(4, 4, 4, 4)).state_dict(), files["mit_b0"])
    if not files["resnet18"].is_file():
        torch.save(timm.create_model("resnet18").state_dict(), files["resnet18"])
    if not files["vgg19"].is_file():
        torch.save(vgg19(weights=None).state_dict(), files["vgg19"])
    return files
