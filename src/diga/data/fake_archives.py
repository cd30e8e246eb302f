"""Pack a fake tree (`diga.data.fake_trees`) into the zip archives its dataset is downloaded as.

So that reading a dataset from its archives can be compared, sample by sample, with reading the unpacked tree: the
archive names and member paths are those of the official downloads as documented in `docs/datasets.md` (GTA5's
numbered parts, Cityscapes' two trainvaltest zips with their loose README, BDD100K's `bdd100k/` folder and
renamed masks, …). A `wrapper` folder around an archive's content tests that it is looked through.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path

Member = Callable[[str], tuple[str, str] | None]  # unpacked relative path → (archive name, member), None: not packed


def _gta5(parts: int) -> Member:
    def member(rel: str) -> tuple[str, str] | None:
        folder, name = rel.split("/", 1)
        part = (int(Path(name).stem) - 1) % parts + 1  # a few fake frames still land in every part
        return f"{part:02d}_{folder}.zip", rel

    return member


def _cityscapes(rel: str) -> tuple[str, str] | None:
    return f"{rel.split('/', 1)[0]}_trainvaltest.zip", rel


def _bdd100k(rel: str) -> tuple[str, str] | None:
    folder, split, name = rel.split("/")
    if folder == "images":
        return "bdd100k_images_10k.zip", f"bdd100k/images/10k/{split}/{name}"
    return "bdd100k_sem_seg_labels_trainval.zip", f"bdd100k/labels/sem_seg/masks/{split}/" + re.sub(
        r"_train_id\.png$", ".png", name
    )


def _mapillary(rel: str) -> tuple[str, str] | None:
    return "mapillary-vistas-dataset_public_v1.2.zip", rel


def _acdc(rel: str) -> tuple[str, str] | None:
    return ("rgb_anon_trainvaltest.zip" if rel.startswith("rgb_anon/") else "gt_trainval.zip"), rel


def _dark_zurich(rel: str) -> tuple[str, str] | None:
    split = rel.split("/")[1].removesuffix("_ref")
    name = {"train": "Dark_Zurich_train_anon", "val": "Dark_Zurich_val_anon", "test": "Dark_Zurich_test_anon_withoutGt"}
    return f"{name[split]}.zip", rel


PACKERS: dict[str, Member] = {
    "gta5": _gta5(2),
    "cityscapes": _cityscapes,
    "bdd100k": _bdd100k,
    "mapillary": _mapillary,
    "acdc": _acdc,
    "dark_zurich": _dark_zurich,
}
LOOSE = {"cityscapes": {"leftImg8bit_trainvaltest.zip": {"README": b"fake", "license.txt": b"fake"}},
         "mapillary": {"mapillary-vistas-dataset_public_v1.2.zip": {"config.json": b"{}"}}}  # fmt: skip


def pack_archives(tree: Path, out: Path, key: str, wrapper: str | None = None) -> list[Path]:
    """Zip the unpacked fake tree `tree` of dataset `key` (a `fake_trees.FOLDERS` key) into `out`, as downloaded;
    `wrapper` puts every member of every archive into one more folder. Returns the archives, sorted."""
    out.mkdir(parents=True, exist_ok=True)
    members: dict[str, list[tuple[str, Path]]] = {}
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        placed = PACKERS[key](path.relative_to(tree).as_posix())
        if placed is not None:
            members.setdefault(placed[0], []).append((placed[1], path))
    written = []
    for archive, files in sorted(members.items()):
        prefix = f"{wrapper}/" if wrapper else ""
        with zipfile.ZipFile(out / archive, "w", zipfile.ZIP_STORED) as zf:
            for name, data in LOOSE.get(key, {}).get(archive, {}).items():
                zf.writestr(prefix + name, data)
            for member, path in files:
                zf.write(path, prefix + member)
        written.append(out / archive)
    return written
