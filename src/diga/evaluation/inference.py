"""Test-time inference: whole image or sliding window, at one or more scales, fused by max or mean.

REF protocol: whole image at scales (1.0, 0.5), bilinear resizes with align_corners=True,
element-wise *max* of the logits. Sliding window (crop/stride) serves models trained on crops that should
not see full 1024×2048 frames at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from diga.utils.windows import CropBox, sliding_boxes, stitch_windows


@dataclass(frozen=True)
class InferenceConfig:
    scales: tuple[float, ...] = (1.0,)
    fusion: str = "max"  # max | mean (of logits)
    mode: str = "whole"  # whole | slide
    crop_size: tuple[int, int] | None = None  # slide window (H, W)
    stride: tuple[int, int] | None = None
    align_corners: bool = True
    flip: bool = False
    batched: bool = False  # slide: every window in one forward (faster, more memory)

    @classmethod
    def from_config(cls, cfg: object) -> InferenceConfig:
        """From a (Hydra) mapping; lists become tuples."""
        from diga.utils.hydra import to_plain

        items = dict(to_plain(cfg) or {})
        return cls(**{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in items.items()})

    def shrunk(self, factor: int) -> InferenceConfig:
        """The same inference for an image `factor`× smaller per side: windows and strides as much smaller (a memory
        probe: as many windows, each with 1/factor² of the pixels)."""

        def divided(size: tuple[int, int] | None) -> tuple[int, int] | None:
            return None if size is None else (int(size[0]) // factor, int(size[1]) // factor)

        return replace(self, crop_size=divided(self.crop_size), stride=divided(self.stride))

    def for_device(self, device: torch.device | str) -> InferenceConfig:
        """This inference as it runs outside a memory-checked training step on `device`: batched windows only on a
        GPU. On the CPU a batch that does not fit kills the process (no `OutOfMemoryError` for `slide_logits` to
        fall back on), and batching buys little there: an HRDA 2048×1024 image took 142 s batched and 149 s one
        window at a time, for 6.6 GB against 2.6 GB (`benchmarks/inference_memory.py`). The same logits either way."""
        if not self.batched or torch.device(device).type == "cuda":
            return self
        return replace(self, batched=False)

    def divides(self, factor: int) -> bool:
        """Whether `shrunk(factor)` slides the same windows: every window and stride side divisible by `factor`
        (whole-image inference always does)."""
        if self.mode != "slide" or self.crop_size is None or self.stride is None:
            return True
        return all(int(v) % factor == 0 and int(v) >= factor for v in (*self.crop_size, *self.stride))

    def __post_init__(self) -> None:
        if self.fusion not in ("max", "mean"):
            raise ValueError(f"fusion must be 'max' or 'mean', got {self.fusion!r}")
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"mode must be 'whole' or 'slide', got {self.mode!r}")
        if self.mode == "slide" and (self.crop_size is None or self.stride is None):
            raise ValueError("slide inference needs crop_size and stride")


PROBE_SIDE = 128  # the smallest side a memory probe forwards (a window, or the image at its smallest scale)


def probe_factor(image: Sequence[int], cfg: InferenceConfig) -> int:
    """The largest of 4, 3, 2, 1 by which an inference memory probe can shrink `image` (H, W): every side it
    forwards stays at `PROBE_SIDE` or more, and windows and strides stay whole (`InferenceConfig.divides`)."""
    scaled = [s * min(cfg.scales) for s in image]  # windows are clipped to the (scaled) image
    sides = [min(c, s) for c, s in zip(cfg.crop_size, scaled)] if cfg.mode == "slide" and cfg.crop_size else scaled
    for f in (4, 3, 2):
        if cfg.divides(f) and min(sides) / f >= PROBE_SIDE:
            return f
    return 1


def min_image_side(model_min_side: int, cfg: InferenceConfig) -> int:
    """The smallest image side this inference can take: the model's minimum at the smallest scale (or the window)."""
    import math

    return math.ceil(model_min_side / min(cfg.scales))


def check_image_size(h: int, w: int, model_min_side: int, cfg: InferenceConfig, what: str) -> None:
    """A clear error for images the model cannot take at the configured scales (naming `what`, e.g. the file)."""
    need = min_image_side(model_min_side, cfg)
    if min(h, w) < need:
        scales = ", ".join(str(s) for s in cfg.scales)
        raise ValueError(f"{what}: {w}×{h} is too small for this model at scales {scales}: both sides must be at least "
                         f"{need} pixels (the encoder's coarsest stride is {model_min_side})")  # fmt: skip


def _resize(x: torch.Tensor, size: Sequence[int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def forward_logits(model: nn.Module, x: torch.Tensor, out_size: Sequence[int], align_corners: bool) -> torch.Tensor:
    """Logits of one forward, up-sampled to `out_size`."""
    return _resize(model(x)[0], out_size, align_corners)


_OUT_OF_MEMORY: set[str] = set()  # "batched": a batched slide ran out of GPU memory in this process


def _unbatch(windows: int, batch: int) -> None:
    """Remember that batched windows do not fit, so later calls go one window at a time; say so once."""
    import logging

    _OUT_OF_MEMORY.add("batched")
    logging.getLogger(__name__).warning(
        "sliding-window inference: %d windows × %d images in one batch ran out of GPU memory; predicting one window "
        "at a time for the rest of this process (inference.batched=false starts that way)",
        windows,
        batch,
    )


def slide_logits(model: nn.Module, x: torch.Tensor, crop: Sequence[int], stride: Sequence[int], num_classes: int,
                 align_corners: bool, batched: bool = False) -> torch.Tensor:  # fmt: skip
    """Average overlapping window logits (mmseg `slide_inference`); windows are clipped to the image. `batched`: all
    windows in one forward (HRDA's `batched_slide`), else one window at a time (less memory). When a batched forward
    runs out of GPU memory, it is repeated one window at a time, and so is every later call in the process (logged
    once): the same logits, less memory."""
    h, w = x.shape[-2:]
    ch, cw = min(crop[0], h), min(crop[1], w)
    boxes = sliding_boxes(h, w, (ch, cw), stride)
    windows: Iterable[tuple[CropBox, torch.Tensor]] | None = None
    if batched and "batched" not in _OUT_OF_MEMORY:  # window i is rows i·B … (i+1)·B of one batch
        try:
            logits = forward_logits(model, torch.cat([b.of(x) for b in boxes]), (ch, cw), align_corners)
            windows = zip(boxes, logits.split(x.shape[0]))
        except torch.OutOfMemoryError:
            _unbatch(len(boxes), x.shape[0])
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if windows is None:
        windows = ((b, forward_logits(model, b.of(x), (ch, cw), align_corners)) for b in boxes)
    return stitch_windows(windows, (h, w))


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, cfg: InferenceConfig, num_classes: int, out_size: Sequence[int] | None = None
) -> torch.Tensor:
    """Fused logits at `out_size` (default: input size) for images `x` in [0, 1]."""
    out_size = tuple(out_size or x.shape[-2:])
    fused: torch.Tensor | None = None
    n = 0
    for s in cfg.scales:
        xs = x if s == 1.0 else _resize(x, (round(x.shape[-2] * s), round(x.shape[-1] * s)), cfg.align_corners)
        for flip in (False, True) if cfg.flip else (False,):
            xi = xs.flip(-1) if flip else xs
            if cfg.mode == "slide":
                logits = slide_logits(model, xi, cfg.crop_size, cfg.stride, num_classes, cfg.align_corners,
                                      cfg.batched)  # fmt: skip
                logits = _resize(logits, out_size, cfg.align_corners)
            else:  # head-resolution logits straight to the output size: one interpolation, as the reference does
                logits = forward_logits(model, xi, out_size, cfg.align_corners)
            logits = logits.flip(-1) if flip else logits
            if fused is None:
                fused = logits
            elif cfg.fusion == "max":
                fused = torch.maximum(fused, logits)
            else:
                fused = fused + logits
            n += 1
    assert fused is not None
    return fused / n if cfg.fusion == "mean" else fused
