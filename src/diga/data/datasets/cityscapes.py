"""Cityscapes: `leftImg8bit/<split>/<city>/*_leftImg8bit.png`, `gtFine/<split>/<city>/*_gtFine_labelIds.png`."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from diga.data.datasets.base import Sample, SegmentationDataset, sorted_files
from diga.data.labels import cityscapes_labelid_to_trainid

IMG_SUFFIX = "_leftImg8bit.png"
LBL_SUFFIX = "_gtFine_labelIds.png"


class Cityscapes(SegmentationDataset):
    max_raw_id = 33
    official_counts: ClassVar[dict[str, int]] = {"train": 2975, "val": 500}  # gtFine
    layout_help = (
        "cityscapes/leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png, "
        "cityscapes/gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png"
    )

    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        return [root / "leftImg8bit" / split, *([root / "gtFine" / split] if with_labels else [])]

    def find_samples(self) -> list[Sample]:
        img_root = self.root / "leftImg8bit" / self.split
        images = sorted_files(img_root, f"*/*{IMG_SUFFIX}")
        out = []
        for p in images:
            stem = p.name[: -len(IMG_SUFFIX)]
            lbl = self.root / "gtFine" / self.split / p.parent.name / f"{stem}{LBL_SUFFIX}"
            # name keeps the `_leftImg8bit` suffix: the reference's pseudo-label files are named like the images
            out.append(Sample(p, lbl, p.stem))
        return out

    def label_mapping(self) -> dict[int, int]:
        return cityscapes_labelid_to_trainid(self.labels.name)


class CityscapesSemi(Cityscapes):
    """A labeled (1/N) or unlabeled (the rest) part of Cityscapes train for semi-supervised segmentation.

    The authors' split lists are not public in this repository; by default the labeled part is a seeded,
    deterministic draw of ceil(2975/N) images (186/372/744/1488 for N = 16/8/4/2, the reference's sizes).
    Pass `split_list` (one image stem per line) to use an official list instead.
    """

    def official_count(self) -> int | None:
        if self.split != "train":
            return super().official_count()
        labeled = -(-2975 // self.ratio)
        return labeled if self.part == "labeled" else 2975 - labeled

    def __init__(
        self,
        *args,
        part: str = "labeled",
        ratio: int = 16,
        split_seed: int = 0,
        split_list: str | None = None,
        **kwargs,
    ) -> None:
        if part not in ("labeled", "unlabeled"):
            raise ValueError(f"part must be 'labeled' or 'unlabeled', got {part!r}")
        self.part, self.ratio, self.split_seed, self.split_list = part, ratio, split_seed, split_list
        super().__init__(*args, **kwargs)

    def find_samples(self) -> list[Sample]:
        import math

        import numpy as np

        from diga.data.io import DatasetError

        samples = super().find_samples()
        if self.split_list:
            lines = Path(self.split_list).read_text().splitlines()
            names = {ln.strip().split("/")[-1].removesuffix(".png") for ln in lines if ln.strip()}
            unknown = names - {s.name for s in samples}
            if unknown:
                raise DatasetError(
                    f"{self.split_list}: {len(unknown)} entries not in the dataset, e.g. {min(unknown)!r}"
                )
            labeled = names
        else:
            n = math.ceil(len(samples) / self.ratio)
            order = np.random.default_rng(self.split_seed).permutation(len(samples))[:n]
            labeled = {samples[i].name for i in order}
        return [s for s in samples if (s.name in labeled) == (self.part == "labeled")]
