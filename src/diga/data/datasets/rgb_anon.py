"""The file layout ACDC and Dark Zurich share (both from ETH's adverse-conditions group): anonymised images
`<folder>/<sequence>/<frame>_rgb_anon.png`, labels `<label folder>/<sequence>/<frame>_gt_labelTrainIds.png`, and
`<split>_ref` folders of day-time reference images that are no split."""

from __future__ import annotations

from pathlib import Path

from diga.data.datasets.base import Sample, sorted_files
from diga.data.io import DatasetError

IMG_SUFFIX = "_rgb_anon.png"
LBL_SUFFIX = "_gt_labelTrainIds.png"


def check_not_reference(root: Path, split: str, dataset: str) -> None:
    """A `<split>_ref` folder holds day-time references of another split, never a split of its own."""
    if split.endswith("_ref"):
        raise DatasetError(f"{root}: {split!r} holds {dataset}'s day-time reference images, not a split")


def anonymised_samples(image_dir: Path, label_dir: Path) -> list[Sample]:
    """Every `<sequence>/<frame>_rgb_anon.png` under `image_dir`, sorted, each with its label under `label_dir`."""
    out = []
    for p in sorted_files(image_dir, f"*/*{IMG_SUFFIX}"):
        stem = p.name[: -len(IMG_SUFFIX)]
        out.append(Sample(p, label_dir / p.parent.name / f"{stem}{LBL_SUFFIX}", p.stem))
    return out
