"""A user's label files in the experiment's label set: which file value (or colour) is which class.

A team's own annotations rarely hold Cityscapes train-ids: an annotation tool writes its own ids, or paints each
class a colour. A small YAML says, class by class, what the files hold:

    classes:              # names of the experiment's label set (e.g. cityscapes19)
      road: 1             # a grey / palette value
      sidewalk: [2, 3]    # several values
      car: {values: [7]}
    ignore: [0, 255]      # values that mean "not labelled"

or, for colour label images, `road: {color: [128, 64, 128]}` for every class and `ignore: [[0, 0, 0]]`. The names
give the train-ids, so a map written for one label set cannot silently shift another's classes; a file value the
map does not list is an error naming the file, never a silent ignore.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diga.data.io import DatasetError
from diga.data.labels import IGNORE_INDEX, LabelSet


@dataclass(frozen=True)
class ClassMap:
    """File value (or packed 0xRRGGBB colour) → train-id, and the values that mean unlabelled."""

    path: Path
    colour: bool
    table: Mapping[int, int]
    ignore: frozenset[int]

    def apply(self, raw: np.ndarray, file: Path | str) -> np.ndarray:
        """Train-ids (uint8, 255 = ignore) of one label image: H×W values, or H×W×3 RGB in colour mode."""
        if self.colour:
            if raw.ndim != 3 or raw.shape[2] != 3:
                raise DatasetError(f"{file}: {self.path} maps colours, so labels must be RGB images")
            keys = (raw[..., 0].astype(np.int64) << 16) | (raw[..., 1].astype(np.int64) << 8) | raw[..., 2]
        else:
            if raw.ndim != 2:
                raise DatasetError(f"{file}: {self.path} maps values, so labels must be single-channel images")
            keys = raw.astype(np.int64)
        values, inverse = np.unique(keys, return_inverse=True)
        unknown = [int(v) for v in values if int(v) not in self.table and int(v) not in self.ignore]
        if unknown:
            shown = [_describe(v, self.colour) for v in unknown[:8]]
            kind = "colours" if self.colour else "values"
            raise DatasetError(f"{file}: label {kind} {', '.join(shown)} are not in the class map {self.path} "
                               "(list them under a class or under ignore)")  # fmt: skip
        ids = np.array([self.table.get(int(v), IGNORE_INDEX) for v in values], dtype=np.uint8)
        return ids[inverse.reshape(keys.shape)]


def _describe(key: int, colour: bool) -> str:
    return f"({key >> 16}, {(key >> 8) & 255}, {key & 255})" if colour else str(key)


def _entry(path: Path, name: str, spec: Any) -> tuple[list[int], bool]:
    """A class's file keys and whether they are colours, from `1`, `[1, 2]`, `{values: …}` or `{color(s): …}`."""
    if isinstance(spec, Mapping):
        if set(spec) - {"values", "color", "colors"} or len(spec) != 1:
            raise DatasetError(f"{path}: class {name!r} takes one of values, color or colors, got {sorted(spec)}")
        key, value = next(iter(spec.items()))
        if key == "values":
            return _values(path, name, value), False
        colours = [value] if key == "color" else value
        return [_colour(path, name, c) for c in colours], True
    return _values(path, name, spec), False


def _values(path: Path, name: str, spec: Any) -> list[int]:
    values = spec if isinstance(spec, list) else [spec]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 65536 for v in values):
        raise DatasetError(f"{path}: class {name!r}: label values must be integers 0..65535, got {spec!r}")
    return list(values)


def _colour(path: Path, name: str, spec: Any) -> int:
    if not (isinstance(spec, list) and len(spec) == 3 and all(isinstance(c, int) and 0 <= c < 256 for c in spec)):
        raise DatasetError(f"{path}: class {name!r}: a colour is [R, G, B] with integers 0..255, got {spec!r}")
    return (spec[0] << 16) | (spec[1] << 8) | spec[2]


def load_class_map(path: str | Path, labels: LabelSet) -> ClassMap:
    """Read and check a class map against `labels`; every problem is a `DatasetError` naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: class map file not found")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DatasetError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(spec, Mapping) or not isinstance(spec.get("classes"), Mapping) or not spec["classes"]:
        raise DatasetError(f"{path}: a class map needs `classes:` (class name → label values or colour)")
    if set(spec) - {"classes", "ignore"}:
        raise DatasetError(f"{path}: unknown keys {sorted(set(spec) - {'classes', 'ignore'})} (classes, ignore)")
    table: dict[int, int] = {}
    modes = set()
    for name, entry in spec["classes"].items():
        if name not in labels.classes:
            raise DatasetError(f"{path}: class {name!r} is not in label set {labels.name} "
                               f"({', '.join(labels.classes)})")  # fmt: skip
        keys, colour = _entry(path, name, entry)
        modes.add(colour)
        for key in keys:
            if key in table:
                raise DatasetError(f"{path}: {_describe(key, colour)} is listed for {labels.classes[table[key]]!r} "
                                   f"and {name!r}")  # fmt: skip
            table[key] = labels.classes.index(name)
    if len(modes) > 1:
        raise DatasetError(f"{path}: mixes label values and colours; a label file holds one or the other")
    colour = modes.pop()
    ignore_spec = spec.get("ignore", [[0, 0, 0]] if colour else [IGNORE_INDEX])
    ignore = {_colour(path, "ignore", c) for c in ignore_spec} if colour else set(_values(path, "ignore", ignore_spec))
    clash = ignore & set(table)
    if clash:
        raise DatasetError(f"{path}: {_describe(min(clash), colour)} is both a class and ignored")
    return ClassMap(path, colour, table, frozenset(ignore))
