"""SYNTHIA RAND_CITYSCAPES: `RGB/0000000.png`, `GT/LABELS/0000000.png` (16-bit, class id in channel 0).

Splits: `train` is all 9,400 frames (the UDA protocol). Domain generalisation uses RobustNet's random split,
`dg_train` (6,580 frames) and `val` (2,820): no rule describes it, so it comes from RobustNet's list files
(`split_data/synthia_split_{train,val}.txt`, one `0000000.png` per line) in `split_dir`; each split reads its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from diga.data.datasets.base import Sample, SegmentationDataset, restrict_to_list, sorted_files
from diga.data.io import DatasetError, read_label
from diga.data.labels import synthia_raw_to_trainid

# RobustNet's domain-generalisation split of the 9,400 frames: its list file and how many frames it holds
DG_SPLITS = {"dg_train": ("synthia_split_train.txt", 6580), "val": ("synthia_split_val.txt", 2820)}


class Synthia(SegmentationDataset):
    max_raw_id = 22
    official_counts: ClassVar[dict[str, int]] = {"train": 9400, **{k: n for k, (_, n) in DG_SPLITS.items()}}

    @classmethod
    def official_names(cls, split: str) -> list[str] | None:
        return [f"{i:07d}" for i in range(9400)] if split == "train" else None

    label_lut_size = 65536  # raw ids are read from a 16-bit channel
    layout_help = (
        "RAND_CITYSCAPES/RGB/0000000.png …, RAND_CITYSCAPES/GT/LABELS/0000000.png … (16-bit, class id in channel 0)"
    )

    def __init__(self, *args: Any, split_dir: str | Path | None = None, **kwargs: Any) -> None:
        """`split_dir`: the folder holding RobustNet's `synthia_split_train.txt` and `synthia_split_val.txt`, read by
        the `dg_train` and `val` splits (`train` reads every frame)."""
        self.split_dir = Path(split_dir) if split_dir else None
        super().__init__(*args, **kwargs)

    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        return [root / "RGB", *([root / "GT" / "LABELS"] if with_labels else [])]

    def split_from_list(self) -> bool:
        return self.split in DG_SPLITS

    def find_samples(self) -> list[Sample]:
        if self.split not in ("train", *DG_SPLITS):
            raise DatasetError(f"{self.root}: SYNTHIA splits are train (all frames), {', '.join(DG_SPLITS)}; got "
                               f"{self.split!r}")  # fmt: skip
        images = sorted_files(self.root / "RGB", "*.png")
        samples = [Sample(p, self.root / "GT" / "LABELS" / p.name, p.stem) for p in images]
        if self.split not in DG_SPLITS:
            return samples
        name, n = DG_SPLITS[self.split]
        if self.split_dir is None:
            raise DatasetError(f"{self.root}: SYNTHIA split {self.split!r} is RobustNet's random split of {n} frames; "
                               f"set split_dir to the folder holding its split_data/{name}")  # fmt: skip
        return restrict_to_list(samples, self.split_dir / name)

    def label_mapping(self) -> dict[int, int]:
        return synthia_raw_to_trainid(self.labels.name)

    def read_raw_label(self, path: Path) -> np.ndarray:
        # Not imageio's FreeImage plugin (downloads a binary at run time); OpenCV reads 16-bit PNGs natively.
        return read_label(path, channel=0)
