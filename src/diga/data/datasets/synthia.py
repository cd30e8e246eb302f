"""SYNTHIA RAND_CITYSCAPES: `RGB/0000000.png`, `GT/LABELS/0000000.png` (16-bit, class id in channel 0)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from diga.data.datasets.base import Sample, SegmentationDataset, sorted_files
from diga.data.io import read_label
from diga.data.labels import synthia_raw_to_trainid


class Synthia(SegmentationDataset):
    max_raw_id = 22
    official_counts: ClassVar[dict[str, int]] = {"train": 9400}  # SYNTHIA-RAND-CITYSCAPES

    @classmethod
    def official_names(cls, split: str) -> list[str] | None:
        return [f"{i:07d}" for i in range(9400)]

    label_lut_size = 65536  # raw ids are read from a 16-bit channel
    layout_help = (
        "RAND_CITYSCAPES/RGB/0000000.png …, RAND_CITYSCAPES/GT/LABELS/0000000.png … (16-bit, class id in channel 0)"
    )

    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        return [root / "RGB", *([root / "GT" / "LABELS"] if with_labels else [])]

    def find_samples(self) -> list[Sample]:
        images = sorted_files(self.root / "RGB", "*.png")
        return [Sample(p, self.root / "GT" / "LABELS" / p.name, p.stem) for p in images]

    def label_mapping(self) -> dict[int, int]:
        return synthia_raw_to_trainid(self.labels.name)

    def read_raw_label(self, path: Path) -> np.ndarray:
        # Not imageio's FreeImage plugin (downloads a binary at run time); OpenCV reads 16-bit PNGs natively.
        return read_label(path, channel=0)
