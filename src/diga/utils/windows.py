"""Windows of an image: a random crop on a grid, overlapping sliding windows, and stitching their predictions.

Shared by HRDA's detail crops (`diga.models.hrda`) and sliding-window inference (`diga.evaluation.inference`);
the placement rules are mmseg's (`slide_inference`, HRDA's `get_crop_bbox`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CropBox:
    """A window `[y1, y2) × [x1, x2)` in pixels."""

    y1: int
    y2: int
    x1: int
    x2: int

    def scaled(self, factor: float) -> CropBox:
        """The same window on a map `factor` times coarser (int() of each corner, as HRDA's `scale_box`)."""
        return CropBox(int(self.y1 / factor), int(self.y2 / factor), int(self.x1 / factor), int(self.x2 / factor))

    def of(self, x: torch.Tensor) -> torch.Tensor:
        """The window of the last two dimensions of `x`."""
        return x[..., self.y1 : self.y2, self.x1 : self.x2]


def random_crop_box(height: int, width: int, crop: Sequence[int], divisible: int = 1,
                    generator: torch.Generator | None = None) -> CropBox:  # fmt: skip
    """A uniformly placed `crop` window whose corner coordinates are multiples of `divisible` (HRDA: 8, so the
    window falls on whole pixels of the stride-4 logits at half resolution)."""
    ch, cw = int(crop[0]), int(crop[1])
    if (height, width) == (ch, cw):
        return CropBox(0, height, 0, width)

    def offset(margin: int) -> int:
        choices = (max(margin, 0) + 1) // divisible
        return int(torch.randint(choices, (1,), generator=generator)) * divisible

    y, x = offset(height - ch), offset(width - cw)
    return CropBox(y, y + ch, x, x + cw)


def sliding_boxes(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> list[CropBox]:
    """Windows covering the image row by row; the last row and column are shifted inwards to end at the border."""
    ch, cw, sh, sw = int(crop[0]), int(crop[1]), int(stride[0]), int(stride[1])
    rows = max(height - ch + sh - 1, 0) // sh + 1
    cols = max(width - cw + sw - 1, 0) // sw + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, height), min(c * sw + cw, width)
            boxes.append(CropBox(max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return boxes


def stitch_windows(windows: Iterable[tuple[CropBox, torch.Tensor]], size: Sequence[int]) -> torch.Tensor:
    """(window, logits) pairs → one `size` map, the mean of every window that covers a pixel. Windows are consumed
    one at a time, so a generator that predicts each window on demand holds one window's logits at once."""
    out: torch.Tensor | None = None
    count: torch.Tensor | None = None
    for box, logits in windows:
        if out is None or count is None:
            out = logits.new_zeros(*logits.shape[:2], int(size[0]), int(size[1]))
            count = logits.new_zeros(1, 1, int(size[0]), int(size[1]))
        box.of(out).add_(logits)
        box.of(count).add_(1)
    if out is None or count is None or bool((count == 0).any()):
        raise ValueError("the windows do not cover the image")
    return out / count
