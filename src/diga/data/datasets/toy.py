"""The embedded toy domain pair (`<root>/<spec folder>/<domain>/<split>/{images,labels}/NNNNN.png`, train-ids).

Rendered on first use (no download); see `diga.data.toy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diga.data.datasets.base import Sample, SegmentationDataset, sorted_files
from diga.data.toy.generator import ToySpec, ensure_toy_dataset


class ToyDataset(SegmentationDataset):
    layout_help = "rendered on first use under <root>/<spec folder>/ (no download)"

    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        return []  # generated when missing

    def __init__(
        self,
        root: str | Path,
        domain: str = "target",
        generate: bool = True,
        spec: dict[str, Any] | None = None,
        label_set: str = "toy",
        **kwargs: Any,
    ) -> None:
        if domain not in ("source", "target"):
            raise ValueError(f"toy domain must be 'source' or 'target', got {domain!r}")
        self.domain = domain
        toy_spec = ToySpec(**(spec or {}))
        # one folder per generator setting, so changing the spec never clashes with an existing dataset
        versioned = Path(root) / toy_spec.folder_name()
        if generate:
            ensure_toy_dataset(versioned, toy_spec)
        super().__init__(versioned, label_set=label_set, **kwargs)

    def find_samples(self) -> list[Sample]:
        base = self.root / self.domain / self.split
        images = sorted_files(base / "images", "*.png")
        return [Sample(p, base / "labels" / p.name, f"{self.domain}_{p.stem}") for p in images]
