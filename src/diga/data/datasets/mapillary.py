"""Mapillary Vistas v1.2: `<split>/images/<id>.jpg`, `<split>/labels/<id>.png` (66 classes, palettised)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from diga.data.datasets.base import Sample, SegmentationDataset, sorted_files
from diga.data.labels import mapillary_to_trainid


class Mapillary(SegmentationDataset):
    max_raw_id = 65
    official_counts: ClassVar[dict[str, int]] = {"training": 18000, "validation": 2000}
    layout_help = "mapillary/validation/images/<id>.jpg, mapillary/validation/labels/<id>.png (Vistas v1.2, 66 classes)"
    # a zip holding both label versions keeps v1.2's under `<split>/v1.2/labels/`
    archive_members = ((r"(training|validation)/v1\.2/labels/(.+)", r"\1/labels/\2"),)

    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        return [root / split / "images", *([root / split / "labels"] if with_labels else [])]

    def find_samples(self) -> list[Sample]:
        images = sorted_files(self.root / self.split / "images", "*.jpg")
        lbl_dir = self.root / self.split / "labels"
        return [Sample(p, lbl_dir / f"{p.stem}.png", p.stem) for p in images]

    def label_mapping(self) -> dict[int, int]:
        return mapillary_to_trainid(self.labels.name)
