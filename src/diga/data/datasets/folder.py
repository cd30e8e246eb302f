"""A folder of your own images as a domain: every image under `root`, at any depth, in sorted order.

Without labels it is an unlabelled target (the whole DiGA pipeline and the DAFormer/MIC baselines adapt to it).
With `labels` (a folder mirroring `root`: `root/a/b.jpg` ↔ `labels/a/b.png`) it is a labelled source or a
validation set; `class_map` (`diga.data.class_map`) says which file value or colour is which class of the
experiment's label set, and without one the label files must hold its train-ids already.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diga.data.class_map import ClassMap, load_class_map
from diga.data.datasets.base import Sample, SegmentationDataset
from diga.data.io import DatasetError, read_label, read_rgb

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageFolder(SegmentationDataset):
    """Args (beside `SegmentationDataset`'s; `split` only names the set — a folder has no splits):
    labels: folder of label PNGs mirroring `root`, or None (unlabelled).
    class_map: YAML mapping label values or colours to the label set's classes, or None (files hold train-ids).
    extensions: image file endings read (case-insensitive).
    """

    layout_help = "<root>/**/<name>.{jpg,png,…} (any depth, any size); labels: <labels>/**/<name>.png, same paths"

    def __init__(self, root: str | Path, labels: str | Path | None = None, class_map: str | Path | None = None,
                 extensions: list[str] | tuple[str, ...] = EXTENSIONS, **kwargs: Any) -> None:  # fmt: skip
        self.label_root = Path(labels) if labels else None
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        self.class_map_file = class_map
        kwargs.setdefault("with_labels", self.label_root is not None)
        if kwargs["with_labels"] and self.label_root is None:
            raise DatasetError(f"{root}: labels were asked for, and no labels folder is set (labels: <folder>)")
        if self.label_root is not None and not self.label_root.is_dir():
            raise DatasetError(f"{self.label_root}: labels folder does not exist")
        self.class_map: ClassMap | None = None
        super().__init__(root, **kwargs)
        if class_map is not None:
            self.class_map = load_class_map(class_map, self.labels)

    def find_samples(self) -> list[Sample]:
        skip = self.label_root.resolve() if self.label_root is not None else None
        images = sorted(p for p in self.root.rglob("*")
                        if p.suffix.lower() in self.extensions and p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
                        and (skip is None or skip not in p.resolve().parents))  # fmt: skip
        samples, seen = [], {}
        for p in images:
            rel = p.relative_to(self.root).with_suffix("")
            name = "__".join(rel.parts)  # pseudo-labels are written flat, as <name>.png
            if name in seen:
                raise DatasetError(f"{p}: has the same name as {seen[name]} (one image per name, any extension)")
            seen[name] = p
            label = self.label_root / rel.with_suffix(".png") if self.label_root is not None else None
            if label is not None and self.with_labels and not label.is_file():
                raise DatasetError(f"{p}: no label file (expected {label})")
            samples.append(Sample(p, label, name))
        return samples

    def load_label(self, sample: Sample) -> np.ndarray:
        if self.class_map is None:
            return super().load_label(sample)  # train-ids, checked against the label set
        assert sample.label is not None
        raw = read_rgb(sample.label) if self.class_map.colour else read_label(sample.label)
        return self.class_map.apply(raw, sample.label)
