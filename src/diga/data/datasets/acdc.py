"""ACDC (adverse conditions): `rgb_anon/<condition>/<split>/<sequence>/<frame>_rgb_anon.png` and
`gt/<condition>/<split>/<sequence>/<frame>_gt_labelTrainIds.png` (Cityscapes train-ids, 255 = void), as unpacked.

Read in the official tree, without the flattening HRDA/MIC ask for, so that each sample keeps its condition:
`conditions` selects fog / night / rain / snow (a per-condition validation set is this class with one condition).
The `<split>_ref` folders (day-time reference images) are never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from diga.data.datasets.base import Sample, SegmentationDataset
from diga.data.datasets.rgb_anon import anonymised_samples, check_not_reference
from diga.data.labels import trainid19_to_trainid

CONDITIONS = ("fog", "night", "rain", "snow")
# images per condition and split in the official release (ACDC: 4,006 images; test labels are withheld)
CONDITION_COUNTS = {
    "fog": {"train": 400, "val": 100, "test": 500},
    "night": {"train": 400, "val": 106, "test": 500},
    "rain": {"train": 400, "val": 100, "test": 500},
    "snow": {"train": 400, "val": 100, "test": 500},
}


def condition_list(conditions: str | Sequence[str] | None) -> tuple[str, ...]:
    """The conditions to read, checked: None = all four, a name, or a list of names."""
    chosen = CONDITIONS if conditions is None else (conditions,) if isinstance(conditions, str) else tuple(conditions)
    unknown = [c for c in chosen if c not in CONDITIONS]
    if unknown or not chosen:
        raise ValueError(f"ACDC conditions are {', '.join(CONDITIONS)}; got {list(chosen)}")
    return chosen


class ACDC(SegmentationDataset):
    official_counts: ClassVar[dict[str, int]] = {
        split: sum(c[split] for c in CONDITION_COUNTS.values()) for split in ("train", "val", "test")
    }
    layout_help = (
        "acdc/rgb_anon/<fog|night|rain|snow>/<train|val|test>/<sequence>/<frame>_rgb_anon.png, "
        "acdc/gt/<condition>/<train|val>/<sequence>/<frame>_gt_labelTrainIds.png (the rgb_anon and gt_trainval "
        "archives unpacked into one folder)"
    )

    def __init__(self, *args: Any, conditions: str | Sequence[str] | None = None, **kwargs: Any) -> None:
        self.conditions = condition_list(conditions)
        super().__init__(*args, **kwargs)

    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        return [root / "rgb_anon", *([root / "gt"] if with_labels else [])]

    def official_count(self) -> int | None:
        counts = [CONDITION_COUNTS[c].get(self.split) for c in self.conditions]
        return None if None in counts else sum(counts)  # type: ignore[arg-type]

    def find_samples(self) -> list[Sample]:
        check_not_reference(self.root, self.split, "ACDC")
        return [sample for condition in self.conditions
                for sample in anonymised_samples(self.root / "rgb_anon" / condition / self.split,
                                                 self.root / "gt" / condition / self.split)]  # fmt: skip

    def label_mapping(self) -> dict[int, int]:
        return trainid19_to_trainid(self.labels.name)  # the files hold Cityscapes train-ids; 255 and others: void
