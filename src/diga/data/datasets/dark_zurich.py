"""Dark Zurich: `rgb_anon/<split>/<time of day>/<sequence>/<frame>_rgb_anon.png` and, for the 50 labelled night
images of `val`, `gt/val/night/<sequence>/<frame>_gt_labelTrainIds.png` (Cityscapes train-ids, 255 = void).

The train, val and test archives unpack into one folder. UDA trains on the 2,416 night images of `train`
(`times: night`); the day and twilight images are there for recipes that use them. The `<split>_ref` folders
(day-time references of val and test) are never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from diga.data.datasets.base import Sample, SegmentationDataset
from diga.data.datasets.rgb_anon import anonymised_samples, check_not_reference
from diga.data.labels import trainid19_to_trainid

TIMES = ("day", "twilight", "night")
TIME_COUNTS = {  # images per split and time of day in the official release (test labels are withheld)
    "train": {"day": 3041, "twilight": 2920, "night": 2416},
    "val": {"night": 50},
    "test": {"night": 151},
}


class DarkZurich(SegmentationDataset):
    official_counts: ClassVar[dict[str, int]] = {"train": 2416, "val": 50, "test": 151}  # night
    layout_help = (
        "dark_zurich/rgb_anon/<train|val|test>/<day|twilight|night>/<sequence>/<frame>_rgb_anon.png, "
        "dark_zurich/gt/val/night/<sequence>/<frame>_gt_labelTrainIds.png (Dark_Zurich_{train,val,test}_anon.zip "
        "unpacked into one folder)"
    )

    def __init__(self, *args: Any, times: str | Sequence[str] = ("night",), **kwargs: Any) -> None:
        chosen = (times,) if isinstance(times, str) else tuple(times)
        if not chosen or any(t not in TIMES for t in chosen):
            raise ValueError(f"Dark Zurich times of day are {', '.join(TIMES)}; got {list(chosen)}")
        self.times = chosen
        super().__init__(*args, **kwargs)

    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        return [root / "rgb_anon" / split, *([root / "gt" / split] if with_labels else [])]

    def official_count(self) -> int | None:
        counts = [TIME_COUNTS.get(self.split, {}).get(t) for t in self.times]
        return None if None in counts else sum(counts)  # type: ignore[arg-type]

    def find_samples(self) -> list[Sample]:
        check_not_reference(self.root, self.split, "Dark Zurich")
        out = []
        for time in self.times:
            folder = self.root / "rgb_anon" / self.split / time
            if not folder.is_dir() and self.split != "train":
                continue  # val and test have night images only
            out += anonymised_samples(folder, self.root / "gt" / self.split / time)
        return out

    def label_mapping(self) -> dict[int, int]:
        return trainid19_to_trainid(self.labels.name)
