"""Class tables, colour palettes and raw-id → train-id mappings.

Everything here is data: one `LabelSet` per benchmark label space and one lookup table per raw
annotation format. Lookup tables are 256-entry (or 65536 for 16-bit formats) arrays so that mapping a
label image is a single fancy-index, with every unlisted raw id mapped to `IGNORE_INDEX`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255

CITYSCAPES_19 = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_19_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

# Cityscapes labelId of every train-id (also the id space of GTA5 labels).
CITYSCAPES_LABELID_OF_TRAINID_19 = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)

# SYNTHIA 16-class setting: indices into the 19 Cityscapes classes kept by the 16-class protocol.
SYNTHIA_16_FROM_19 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
# The 13-class (mIoU*) subset of the 16 classes: wall, fence, pole dropped.
SYNTHIA_13_OF_16 = (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

# SYNTHIA RAND_CITYSCAPES raw class id → 19-class train-id (the usual DAFormer/ProDA table).
SYNTHIA_RAW_TO_19 = {
    3: 0,
    4: 1,
    2: 2,
    21: 3,
    5: 4,
    7: 5,
    15: 6,
    9: 7,
    6: 8,
    16: 9,
    1: 10,
    10: 11,
    17: 12,
    8: 13,
    18: 14,
    19: 15,
    20: 16,
    12: 17,
    11: 18,
}

# Mapillary Vistas v1.2 (66 classes) → 19 Cityscapes train-ids (as the authors' DG Mapillary loader).
MAPILLARY_66_TO_19 = {
    13: 0,
    24: 0,
    41: 0,
    2: 1,
    15: 1,
    17: 2,
    6: 3,
    3: 4,
    45: 5,
    47: 5,
    48: 6,
    50: 7,
    30: 8,
    29: 9,
    27: 10,
    19: 11,
    20: 12,
    21: 12,
    22: 12,
    55: 13,
    61: 14,
    54: 15,
    58: 16,
    57: 17,
    52: 18,
}


@dataclass(frozen=True)
class LabelSet:
    """A label space: class names in train-id order, their colours, and reporting subsets."""

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    # Named subsets of class indices reported beside the full mIoU (e.g. SYNTHIA's 13-class mIoU*).
    subsets: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette_bytes(self) -> list[int]:
        """A flat 768-entry PIL palette; unlisted indices (incl. 255) are black."""
        flat = [c for rgb in self.palette for c in rgb]
        return flat + [0] * (768 - len(flat))

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """H×W train-ids → H×W×3 uint8 colours (ignore → black)."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.palette, dtype=np.uint8)
        return lut[np.clip(label, 0, 255).astype(np.uint8)]


TOY_CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car", "person")
TOY_PALETTE = tuple(CITYSCAPES_19_PALETTE[CITYSCAPES_19.index(c)] for c in TOY_CLASSES)

LABEL_SETS: dict[str, LabelSet] = {
    "cityscapes19": LabelSet("cityscapes19", CITYSCAPES_19, CITYSCAPES_19_PALETTE),
    "synthia16": LabelSet(
        "synthia16",
        tuple(CITYSCAPES_19[i] for i in SYNTHIA_16_FROM_19),
        tuple(CITYSCAPES_19_PALETTE[i] for i in SYNTHIA_16_FROM_19),
        subsets=(("mIoU13", SYNTHIA_13_OF_16),),
    ),
    "toy": LabelSet("toy", TOY_CLASSES, TOY_PALETTE),
}


def get_label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise KeyError(f"unknown label set {name!r}; known: {sorted(LABEL_SETS)}") from None


def lookup_table(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A dense raw-id → train-id table; ids not in `mapping` map to IGNORE_INDEX."""
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for raw, train in mapping.items():
        lut[raw] = train
    return lut


def cityscapes_labelid_to_trainid(label_set: str) -> dict[int, int]:
    """Cityscapes/GTA5 labelId → train-id of the given label set (19 or SYNTHIA's 16)."""
    full = dict(zip(CITYSCAPES_LABELID_OF_TRAINID_19, range(19)))
    return _restrict(full, label_set)


def synthia_raw_to_trainid(label_set: str) -> dict[int, int]:
    return _restrict(SYNTHIA_RAW_TO_19, label_set)


def mapillary_to_trainid(label_set: str) -> dict[int, int]:
    return _restrict(MAPILLARY_66_TO_19, label_set)


def trainid19_to_trainid(label_set: str) -> dict[int, int]:
    """Identity on 0..18 (BDD100K labels are already 19-class train-ids), restricted to the label set."""
    return _restrict({i: i for i in range(19)}, label_set)


def _restrict(to19: dict[int, int], label_set: str) -> dict[int, int]:
    """Compose a raw → 19-class mapping with 19 → label-set indices (16-class drops terrain/truck/train)."""
    if label_set == "cityscapes19":
        return dict(to19)
    if label_set == "synthia16":
        idx16 = {c19: c16 for c16, c19 in enumerate(SYNTHIA_16_FROM_19)}
        return {raw: idx16[t] for raw, t in to19.items() if t in idx16}
    raise KeyError(f"label set {label_set!r} has no mapping from Cityscapes train-ids")
