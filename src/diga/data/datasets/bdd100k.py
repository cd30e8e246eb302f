"""BDD100K semantic segmentation: `images/<split>/<name>.jpg`, `gtFine/<split>/<name>_train_id.png` (train-ids)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from diga.data.datasets.base import Sample, SegmentationDataset, sorted_files
from diga.data.labels import trainid19_to_trainid


class BDD100K(SegmentationDataset):
    official_counts: ClassVar[dict[str, int]] = {"train": 7000, "val": 1000}  # the 10K semantic segmentation subset
    layout_help = "bdd100k/images/val/<name>.jpg, bdd100k/gtFine/val/<name>_train_id.png (train-ids)"
    # the official zips (after their `bdd100k/` folder): bdd100k_images_10k.zip, bdd100k_sem_seg_labels_trainval.zip;
    # the earlier release bdd100k_seg.zip keeps `seg/images/`, `seg/labels/<name>_train_id.png`
    archive_members = (
        (r"images/10k/(train|val|test)/(.+)", r"images/\1/\2"),
        (r"labels/sem_seg/masks/(train|val)/(.+)\.png", r"gtFine/\1/\2_train_id.png"),
        (r"seg/images/(.+)", r"images/\1"),
        (r"seg/labels/(.+)", r"gtFine/\1"),
    )

    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        return [root / "images" / split, *([root / "gtFine" / split] if with_labels else [])]

    def find_samples(self) -> list[Sample]:
        images = sorted_files(self.root / "images" / self.split, "*.jpg")
        lbl_dir = self.root / "gtFine" / self.split
        return [Sample(p, lbl_dir / f"{p.stem}_train_id.png", p.stem) for p in images]

    def label_mapping(self) -> dict[int, int]:
        # Values 0..18 are train-ids, everything else (incl. 255) is ignore (REF BDDLoader).
        return trainid19_to_trainid(self.labels.name)
