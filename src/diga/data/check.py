"""Check a dataset split before training on it: every file decodes, labels fit their images and the label format,
and the split is the one the paper used (image count and file names against the official release).

A corrupt PNG found at step 20 000 costs a day; reading every file once up front costs minutes (files are decoded
in a thread pool: PIL and OpenCV release the GIL). The split's fingerprint — count and a hash of its sorted file
list — goes into the report so two machines can tell whether they train on the same data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diga.data.datasets.base import Sample, SegmentationDataset
from diga.data.io import DatasetError, read_rgb

SHOWN = 10  # file names listed per kind of problem in the summary (the report has them all)
PROBLEMS = {
    "errors": "unreadable or inconsistent",
    "missing_labels": "images without a label file",
    "unpaired_labels": "label files without an image",
    "missing_official": "official files missing",
    "extra_official": "files not in the official release",
}


@dataclass
class SplitReport:
    """What `check_split` found in one split; `ok` is False only for errors, never for a non-official count."""

    dataset: str
    split: str
    root: str
    images: int
    official_images: int | None
    file_list_sha256: str
    restricted_by: str | None = None  # list_file / limit: a subset on purpose
    decoded: int = 0
    errors: list[str] = field(default_factory=list)
    missing_labels: list[str] = field(default_factory=list)
    unpaired_labels: list[str] = field(default_factory=list)
    missing_official: list[str] = field(default_factory=list)
    extra_official: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # full sizes of the lists above

    @property
    def ok(self) -> bool:
        return not self.errors and not self.missing_labels

    @property
    def official(self) -> bool | None:
        return None if self.official_images is None else self.images == self.official_images

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "official": self.official}

    def summary(self) -> str:
        head = f"{self.dataset} {self.split} ({self.root}): {self.images} images"
        if self.official_images is not None:
            head += " = official count" if self.official else f" (official: {self.official_images})"
        if self.restricted_by:
            head += f", restricted by {self.restricted_by}"
        lines = [head, f"  file list sha256 {self.file_list_sha256[:16]}…, {self.decoded} decoded"]
        for key, what in PROBLEMS.items():
            items = getattr(self, key)[:SHOWN]
            if not items:
                continue
            n = self.counts.get(key, len(items))
            if key.endswith("_official"):  # names only: one line
                lines.append(f"  {n} {what}: " + ", ".join(items) + (" …" if n > len(items) else ""))
            else:
                lines += [f"  {n} {what}:", *(f"    {item}" for item in items)]
                lines += [f"    … and {n - len(items)} more (all in the report)"] if n > len(items) else []
        return "\n".join(lines)


def file_list_hash(dataset: SegmentationDataset) -> str:
    """sha256 over the sorted image (and label) paths relative to the root: the same split gives the same hash on
    every machine, whatever the root."""
    h = hashlib.sha256()
    for s in sorted(dataset.samples, key=lambda s: str(s.image)):
        h.update(str(s.image.relative_to(dataset.root)).encode())
        if dataset.with_labels and s.label is not None:
            h.update(b"\t" + str(s.label.relative_to(dataset.root)).encode())
        h.update(b"\n")
    return h.hexdigest()


def unpaired_label_files(samples: list[Sample]) -> list[Path]:
    """Files in the label folders that look like labels (same name ending) but belong to no image."""
    labels = [s.label for s in samples if s.label is not None]
    if len(labels) < 2:
        return []
    names = [p.name for p in labels]
    ending = _common_suffix(names)
    referenced = set(labels)
    out: list[Path] = []
    for folder in sorted({p.parent for p in labels}):
        out += [p for p in sorted(folder.glob(f"*{ending}")) if p not in referenced]
    return out


def _common_suffix(names: list[str]) -> str:
    rev = [n[::-1] for n in names]
    first, last = min(rev), max(rev)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n][::-1] or ".png"


def check_sample(dataset: SegmentationDataset, sample: Sample, min_side: int) -> str | None:
    """None if the sample decodes and is consistent, else a one-line problem naming the file."""
    try:
        image = read_rgb(sample.image)
        h, w = image.shape[:2]
        if min(h, w) < min_side:
            return f"{sample.image}: {w}×{h} is smaller than the model's minimum side {min_side}"
        if dataset.with_labels and sample.label is not None and sample.label.exists():
            label = dataset.load_label(sample)  # decodes and checks the ids against the format
            if label.shape != (h, w):
                return (f"{sample.label}: label size {label.shape[1]}×{label.shape[0]} does not match image "
                        f"{sample.image} size {w}×{h}")  # fmt: skip
    except DatasetError as e:
        return str(e)
    except Exception as e:  # anything else a broken file can raise in a decoder
        return f"{sample.image}: {type(e).__name__}: {e}"
    return None


def check_split(dataset: SegmentationDataset, decode: bool = True, min_side: int = 1, workers: int = 4,
                progress: Callable[[Iterable[Any], int, str], Iterable[Any]] | None = None) -> SplitReport:  # fmt: skip
    """Fingerprint `dataset` and, with `decode`, read every image and label of it."""
    samples = dataset.samples
    listed = bool(dataset.list_file) and not dataset.split_from_list()
    restricted = "list_file" if listed else ("limit" if dataset.limit else None)
    report = SplitReport(
        dataset=type(dataset).__name__,
        split=dataset.split,
        root=str(dataset.root),
        images=len(samples),
        official_images=None if restricted else dataset.official_count(),
        file_list_sha256=file_list_hash(dataset),
        restricted_by=restricted,
    )
    full: dict[str, list[str]] = {}
    if dataset.with_labels:
        full["missing_labels"] = [str(s.label) for s in samples if s.label is None or not s.label.exists()]
        if not (dataset.list_file or dataset.split_from_list()):  # the frames a list leaves out keep their labels
            full["unpaired_labels"] = [str(p) for p in unpaired_label_files(samples)]
    official = None if restricted else type(dataset).official_names(dataset.split)
    if official is not None:
        present = {s.name for s in samples}
        full["missing_official"] = sorted(set(official) - present)
        full["extra_official"] = sorted(present - set(official))
    if decode:
        track = progress or (lambda items, total, what: items)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(lambda s: check_sample(dataset, s, min_side), samples)
            full["errors"] = [r for r in track(results, len(samples), f"checking {report.dataset} {report.split}")
                              if r is not None]  # fmt: skip
        report.decoded = len(samples)
    for key, items in full.items():  # the report keeps every problem; the summary shows the first few
        setattr(report, key, items)
        report.counts[key] = len(items)
    return report
