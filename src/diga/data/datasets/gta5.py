"""GTA5 (Richter et al. 2016): `images/00001.png`, `labels/00001.png` (Cityscapes labelIds)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from diga.data.datasets.base import Sample, SegmentationDataset, sorted_files
from diga.data.labels import cityscapes_labelid_to_trainid


class GTA5(SegmentationDataset):
    """All frames by default (one split); `list_file` selects e.g. the authors' `train_modified.txt`."""

    max_raw_id = 33
    official_counts: ClassVar[dict[str, int]] = {"train": 24966}

    @classmethod
    def official_names(cls, split: str) -> list[str] | None:
        return [f"{i:05d}" for i in range(1, 24967)]

    layout_help = "GTA5/images/00001.png …, GTA5/labels/00001.png … (Cityscapes labelIds)"

    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        return [root / "images", *([root / "labels"] if with_labels else [])]

    def find_samples(self) -> list[Sample]:
        images = sorted_files(self.root / "images", "*.png")
        label_dir = self.root / "labels"
        return [Sample(p, label_dir / p.name, p.stem) for p in images]

    def label_mapping(self) -> dict[int, int]:
        return cityscapes_labelid_to_trainid(self.labels.name)
