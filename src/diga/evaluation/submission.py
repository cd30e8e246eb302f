"""Test-set predictions in the layout a benchmark's evaluation server takes (ACDC and Dark Zurich score their test
sets only there). Pure functions: which files one prediction becomes, and the archive of a folder of them.

Layouts (docs/datasets.md, "Submitting test-set predictions", says where each comes from):

* `acdc`: `<image name>.png` for every test image of the four conditions, flat at the archive's root: 8-bit
  Cityscapes train-ids at the image's 1920×1080 (the server's stated encoding and size; flat, named like the input
  image, as the ETH group's own Refign and CMA write them).
* `dark_zurich`: `labelTrainIds/`, `labelTrainIds_invalid/` and `confidence/` at the archive's root, each with
  `<image name>.png`: the train-ids (scored by IoU); the train-ids with 255 where a pixel is declared invalid (for
  UIoU — none is here: the same train-ids); each pixel's confidence (max softmax) as a 16-bit PNG, × 65535.
* `cityscapes`: `<image name>.png` in Cityscapes label ids (its server's format).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diga.data.io import png_bytes
from diga.data.labels import CITYSCAPES_LABELID_OF_TRAINID_19
from diga.utils.io import atomic_write_bytes


@dataclass(frozen=True)
class SubmissionFormat:
    """Where a benchmark's server looks for each test image's prediction, and how it reads the values."""

    name: str
    label_folders: tuple[str, ...]  # folders that each hold the predicted labels of every image
    encoding: str  # "train_ids" | "cityscapes_label_ids"
    confidence_folder: str | None = None  # 16-bit max-softmax confidence maps
    test_images: int | None = None  # the official test split's size: a submission with fewer is rejected


FORMATS = {
    "acdc": SubmissionFormat("acdc", ("",), "train_ids", test_images=2000),
    "dark_zurich": SubmissionFormat(
        "dark_zurich",
        ("labelTrainIds", "labelTrainIds_invalid"),
        "train_ids",
        confidence_folder="confidence",
        test_images=151,
    ),
    "cityscapes": SubmissionFormat("cityscapes", ("",), "cityscapes_label_ids", test_images=1525),
}


FORMAT_OF_DATASET = {"ACDC": "acdc", "DarkZurich": "dark_zurich", "Cityscapes": "cityscapes"}  # by dataset class


def format_for(dataset_target: str) -> SubmissionFormat:
    """The submission format of a dataset config's class (`_target_`), or a ValueError naming the ones there are."""
    name = FORMAT_OF_DATASET.get(dataset_target.rsplit(".", 1)[-1])
    if name is None:
        raise ValueError(f"{dataset_target}: no evaluation server format for this dataset; diga.submit writes "
                         f"{', '.join(FORMATS)} (data=acdc, data=dark_zurich, data=cityscapes)")  # fmt: skip
    return FORMATS[name]


def encode_labels(train_ids: np.ndarray, encoding: str) -> np.ndarray:
    """Predicted 19-class train-ids in the server's encoding."""
    if int(train_ids.max(initial=0)) >= len(CITYSCAPES_LABELID_OF_TRAINID_19):
        raise ValueError("submissions take Cityscapes' 19 classes: a prediction has a train-id ≥ 19")
    if encoding == "train_ids":
        return train_ids.astype(np.uint8)
    if encoding == "cityscapes_label_ids":
        return np.asarray(CITYSCAPES_LABELID_OF_TRAINID_19, np.uint8)[train_ids]
    raise ValueError(f"unknown label encoding {encoding!r}")


def prediction_files(fmt: SubmissionFormat, image_name: str, train_ids: np.ndarray,
                     confidence: np.ndarray | None = None) -> dict[str, bytes]:  # fmt: skip
    """`{relative path: PNG bytes}` for one image: its labels in every label folder and, where the format has one,
    its confidence map (`confidence`: H×W floats in [0, 1])."""
    stem = image_name.removesuffix(".png")
    labels = png_bytes(encode_labels(train_ids, fmt.encoding))
    files = {str(Path(folder) / f"{stem}.png"): labels for folder in fmt.label_folders}
    if fmt.confidence_folder is not None:
        if confidence is None:
            raise ValueError(f"the {fmt.name} format needs a confidence map")
        scaled = np.round(np.clip(confidence, 0.0, 1.0) * 65535).astype(np.uint16)
        files[str(Path(fmt.confidence_folder) / f"{stem}.png")] = png_bytes(scaled)
    return files


def write_archive(folder: Path, files: Iterable[str], archive: Path) -> Path:
    """Zip `files` (paths relative to `folder`) into `archive`, atomically, with the folder's layout at its root."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in sorted(files):
            zf.write(folder / rel, arcname=rel)
    atomic_write_bytes(archive, buf.getvalue())
    return archive
