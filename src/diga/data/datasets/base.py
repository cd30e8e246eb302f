"""The one dataset class every benchmark specialises: a list of (image, label) files in a real layout.

Subclasses only say *where* the files are (`find_samples`) and *how* raw label ids become train-ids
(`raw_to_trainid` / `read_label`). Everything else — transforms, pseudo-labels, size checks, the errors
that name the file — lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from diga.data.archives import dataset_root
from diga.data.io import DatasetError, check_ids, map_label, read_label, read_rgb
from diga.data.labels import IGNORE_INDEX, LabelSet, get_label_set, lookup_table


@dataclass(frozen=True)
class Sample:
    """One image and, where the split has them, its ground-truth label file."""

    image: Path
    label: Path | None
    name: str  # unique stem, used for pseudo-label file names and logging


class SegmentationDataset(Dataset):
    """Base class: returns dicts with `image` (uint8 3×H×W RGB), `label` (int64 H×W train-ids), `name`.

    Args:
        root: dataset root in the dataset's official on-disk layout.
        split: which split to read (dataset-specific names, e.g. "train", "val").
        label_set: the train-id space (e.g. "cityscapes19", "synthia16").
        transform: an albumentations Compose taking `image`, `mask` (and `pseudo`) — or None.
        with_labels: read ground truth. UDA target training sets are read without it.
        pseudo_label_dir: flat folder of `<name>.png` pseudo-labels written by the pseudo-label stage.
        pseudo_margins: `[top, bottom, left, right]` pixels of the native image where pseudo-labels are not
            trusted (Cityscapes' rectification border; HRDA/MIC: [30, 240, 30, 30]): each training sample then
            carries `valid_pseudo_mask`, geometrically augmented with the image (so a crop away from the border keeps
            every pixel).
        list_file: optional text file restricting the samples (one name per line, matched against `name`).
        limit: keep only the first `limit` samples (quick runs).
    """

    label_map: dict[int, int] | None = None  # raw id → train-id; None = labels are train-ids already
    # how the official download is laid out (for the up-front check of a run's inputs)
    layout_help = ""
    label_lut_size = 256
    max_raw_id: int | None = None  # largest id the raw annotation format defines; larger ids are an error
    # official zip archives whose member paths differ from the unpacked layout: (regex, replacement) renames
    archive_members: ClassVar[tuple[tuple[str, str], ...]] = ()
    official_counts: ClassVar[dict[str, int]] = {}  # images per split of the official release (for `diga.check_data`)

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        label_set: str = "cityscapes19",
        transform: Callable[..., dict[str, Any]] | None = None,
        with_labels: bool = True,
        pseudo_label_dir: str | Path | None = None,
        list_file: str | Path | None = None,
        limit: int | None = None,
        pseudo_margins: Sequence[int] | None = None,
    ) -> None:
        # the unpacked layout, or the dataset's zip archives read in place (`diga.data.archives`)
        self.root = dataset_root(type(self), root, split, with_labels)
        self.split = split
        self.labels: LabelSet = get_label_set(label_set)
        self.transform = transform
        self.with_labels = with_labels
        self.pseudo_label_dir = Path(pseudo_label_dir) if pseudo_label_dir else None
        self.pseudo_margins = margins_or_none(pseudo_margins)
        self.list_file, self.limit = list_file, limit
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset root of {type(self).__name__} does not exist")
        samples = self.find_samples()
        if list_file:
            samples = restrict_to_list(samples, Path(list_file))
        if limit:
            samples = samples[:limit]
        if not samples:
            raise DatasetError(f"{self.root}: no {split!r} samples found for {type(self).__name__}")
        self.samples: list[Sample] = samples
        if with_labels:
            missing = [s for s in samples if s.label is None]
            if missing:
                raise DatasetError(f"{missing[0].image}: no label file for this image")
        mapping = self.label_mapping()
        self._lut = lookup_table(mapping, self.label_lut_size) if mapping is not None else None
        if self.pseudo_label_dir is not None and not self.pseudo_label_dir.is_dir():
            raise DatasetError(f"{self.pseudo_label_dir}: pseudo-label directory does not exist")

    # --- what subclasses provide -------------------------------------------------------------------
    @classmethod
    def layout(cls, root: Path, split: str, with_labels: bool) -> list[Path]:
        """Folders that must exist under `root` for `split` — checked before a run builds anything."""
        return [root]

    def find_samples(self) -> list[Sample]:
        raise NotImplementedError

    @classmethod
    def official_names(cls, split: str) -> list[str] | None:
        """Sample names of the official release where they follow from the format (numbered frames), else None."""
        return None

    def official_count(self) -> int | None:
        """How many samples this split has in the official release (None: unknown, or a custom list)."""
        return self.official_counts.get(self.split)

    def split_from_list(self) -> bool:
        """Whether `list_file` defines this split (a published list, e.g. SYNTHIA's DG split) rather than restricting
        it to a subset on purpose: `check_data` then counts it against the official size."""
        return False

    def label_mapping(self) -> dict[int, int] | None:
        """raw id → train-id for `self.labels`; None when files already hold train-ids."""
        return None

    def read_raw_label(self, path: Path) -> np.ndarray:
        return read_label(path)

    # --- shared machinery ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.labels.num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def load_label(self, sample: Sample) -> np.ndarray:
        """Ground-truth train-ids of one sample (uint8, 255 = ignore), with all checks."""
        assert sample.label is not None
        raw = self.read_raw_label(sample.label)
        if self.max_raw_id is not None and raw.size and int(raw.max()) > self.max_raw_id:
            bad = raw[(raw > self.max_raw_id) & (raw != IGNORE_INDEX)]  # 255 is void in every 8-bit format
            if bad.size:
                raise DatasetError(
                    f"{sample.label}: label id {int(bad.max())} is outside the id range 0..{self.max_raw_id} of "
                    f"{type(self).__name__} annotations (wrong label file or format?)"
                )
        if self._lut is not None:
            lab = map_label(raw, self._lut, sample.label)
        else:
            lab = check_ids(raw, self.num_classes, sample.label).astype(np.uint8)
        return lab

    def load_pseudo_label(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        assert self.pseudo_label_dir is not None
        path = self.pseudo_label_dir / f"{sample.name}.png"
        pl = read_label(path).astype(np.int64)
        if pl.shape != shape:
            # pseudo-labels may be stored at another resolution; nearest resize keeps ids exact
            import cv2

            pl = cv2.resize(pl.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        pl = np.where((pl >= 0) & (pl < self.num_classes), pl, IGNORE_INDEX)
        return pl.astype(np.uint8)

    def __getitem__(self, item: int | tuple[int, ...]) -> dict[str, Any]:
        """`item` is an index, `(index, augmentation seed)` from a `StepSampler` (reproducible augmentation), or
        `(index, seed, class)` from rare class sampling (the crop is then redrawn until it shows the class)."""
        index, rare_class = item, None
        if isinstance(item, tuple):
            index, aug_seed = item[0], item[1]
            rare_class = item[2] if len(item) > 2 else None
            from diga.data.transforms import seed_transform

            seed_transform(self.transform, aug_seed)
        sample = self.samples[index]
        image = read_rgb(sample.image)
        data: dict[str, Any] = {"image": image}
        if self.with_labels:
            label = self.load_label(sample)
            if label.shape != image.shape[:2]:
                raise DatasetError(
                    f"{sample.label}: label size {label.shape[1]}×{label.shape[0]} does not match image "
                    f"{sample.image} size {image.shape[1]}×{image.shape[0]}"
                )
            data["mask"] = label
        if self.pseudo_label_dir is not None:
            data["pseudo"] = self.load_pseudo_label(sample, image.shape[:2])
        if self.pseudo_margins is not None:
            data["valid"] = valid_pseudo_mask(image.shape[:2], self.pseudo_margins)
        if self.transform is not None:
            data = self.transform(**data) if rare_class is None else self.transform(**data, rare_class=rare_class)
        out: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(data["image"])).permute(2, 0, 1).contiguous(),
            "name": sample.name,
            "index": index,
        }
        # labels travel as uint8 (train-ids < 255, 255 = void): an eighth of int64's host and host→device traffic;
        # consumers widen them on the device (`widen_labels`)
        h, w = out["image"].shape[-2:]
        out["label"] = (
            torch.from_numpy(np.ascontiguousarray(data["mask"], dtype=np.uint8))
            if "mask" in data
            else torch.full((h, w), IGNORE_INDEX, dtype=torch.uint8)
        )
        if "pseudo" in data:
            out["pseudo_label"] = torch.from_numpy(np.ascontiguousarray(data["pseudo"], dtype=np.uint8))
        if "valid" in data:
            out["valid_pseudo_mask"] = torch.from_numpy(np.ascontiguousarray(data["valid"], dtype=np.uint8))
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"


def restrict_to_list(samples: list[Sample], list_file: Path) -> list[Sample]:
    """The samples a list file names (one per line, a file name or stem), in the list's order; an entry without an
    image, or a missing file, is a `DatasetError` naming the list."""
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: list file not found")
    wanted = [Path(line.strip()).stem for line in list_file.read_text().splitlines() if line.strip()]
    by_name = {s.name: s for s in samples}
    # list entries may carry dataset suffixes (e.g. "_leftImg8bit"); match on stems either way
    by_stem = {Path(s.image).stem: s for s in samples}
    out: list[Sample] = []
    for w in wanted:
        s = by_name.get(w) or by_stem.get(w)
        if s is None:
            raise DatasetError(f"{list_file}: entry {w!r} has no matching image in the dataset")
        out.append(s)
    return out


def sorted_files(folder: Path, pattern: str) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: expected directory is missing")
    return sorted(folder.glob(pattern))


def margins_or_none(margins: Sequence[int] | None) -> tuple[int, int, int, int] | None:
    """`[top, bottom, left, right]` as four non-negative ints, None when absent or all zero."""
    if margins is None:
        return None
    values = tuple(int(m) for m in margins)
    if len(values) != 4 or min(values) < 0:
        raise ValueError(f"pseudo_margins must be [top, bottom, left, right] pixels ≥ 0, got {list(margins)}")
    return values if any(values) else None  # type: ignore[return-value]


def valid_pseudo_mask(shape: tuple[int, int], margins: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 H×W: 1 inside, 0 in the `[top, bottom, left, right]` margins (HRDA's `valid_pseudo_mask`)."""
    top, bottom, left, right = margins
    mask = np.ones(shape, dtype=np.uint8)
    mask[:top] = 0
    mask[mask.shape[0] - bottom :] = 0
    mask[:, :left] = 0
    mask[:, mask.shape[1] - right :] = 0
    return mask
