"""HRDA (Hoyer et al. 2022): multi-resolution training and inference around any encoder and decode head.

A training crop (1024×1024) is seen twice: whole at half resolution (the *context*), and as a `hr_crop_size` window
(512×512, corners on a grid of `crop_divisible` pixels) at full resolution (the *detail*). One decode head serves
both scales; a second, light head (`attention`: DAFormer's head with a 1×1 fusion, one sigmoid channel per class)
predicts from the context features how much to trust the detail prediction at each pixel. With a the attention
(zero outside the detail window during training) and ↑ bilinear up-sampling by 1/context_scale,

    fused = ↑a · detail_inserted + ↑((1 − a) · context)

and the training loss is (1 − λ_d)·CE(fused, y) + λ_d·CE(detail, y cropped), λ_d = `detail_loss_weight` (0.1).
At inference the detail covers the whole image in overlapping windows (stride half the window, all windows in one
batch) whose logits are averaged where they overlap, and the attention is not masked.

The pieces are pure functions (`fuse_scales`, `multi_resolution_loss`, the windows of `diga.utils.windows`),
checked against the authors' HRDAHead/HRDAEncoderDecoder in tests/reference/.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from diga.models.segmentor import Segmentor, SegOutput, TrainingPass
from diga.utils.windows import CropBox, random_crop_box, sliding_boxes, stitch_windows


def attention_in_window(attention: torch.Tensor, window: CropBox) -> torch.Tensor:
    """The attention with zeros outside `window` (in its own pixels): there only the context prediction counts."""
    mask = torch.zeros_like(attention[:, :1])
    window.of(mask).fill_(1)
    return attention * mask


def fuse_scales(context: torch.Tensor, attention: torch.Tensor, detail: torch.Tensor, upscale: float,
                output_stride: int, detail_box: CropBox | None = None,
                align_corners: bool = False) -> torch.Tensor:  # fmt: skip
    """↑a · detail + ↑((1 − a) · context), with ↑ bilinear up-sampling by `upscale` (= 1 / context scale).

    context, attention: logits and sigmoid attention at context resolution. detail: logits of the whole image
    (`detail_box` None) or of the window `detail_box` (input pixels), outside which the attention is zero and the
    context alone is used. The result is at the full-resolution image's `output_stride`.
    """
    if detail_box is not None:
        attention = attention_in_window(attention, detail_box.scaled(output_stride * upscale))
    up = F.interpolate((1 - attention) * context, scale_factor=upscale, mode="bilinear", align_corners=align_corners)
    attention = F.interpolate(attention, scale_factor=upscale, mode="bilinear", align_corners=align_corners)
    if detail_box is not None:
        inserted = torch.zeros_like(up)
        detail_box.scaled(output_stride).of(inserted).copy_(detail)
        detail = inserted
    return attention * detail + up


def multi_resolution_loss(loss: Callable[..., torch.Tensor], fused: torch.Tensor, detail: torch.Tensor | None,
                          label: torch.Tensor, detail_box: CropBox | None, detail_weight: float,
                          weight: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """(1 − λ_d)·loss(fused, y) + λ_d·loss(detail, y in the detail window); `loss(logits, label, weight=…)` resizes
    the logits to the label itself. `detail_box` is in label pixels. Without a detail window (`detail` None, a
    one-resolution model): loss(fused, y)."""
    kw = {} if weight is None else {"weight": weight}
    if detail is None or detail_box is None:
        return loss(fused, label, **kw)
    total = (1 - detail_weight) * loss(fused, label, **kw)
    if detail_weight > 0:
        crop_kw = {} if weight is None else {"weight": detail_box.of(weight)}
        total = total + detail_weight * loss(detail, detail_box.of(label), **crop_kw)
    return total


class HRDASegmentor(Segmentor):
    """A `Segmentor` whose `forward` is HRDA's multi-resolution inference and `forward_train` its training pass.

    `attention` is the scale-attention head (built like a decode head, `num_classes` outputs). `feat` of the
    output is the context pass's feature map, up-sampled to the fused logits' grid (HRDA computes DAFormer's feature
    distance on the context too; diga's centroids live there).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, attention: nn.Module, num_classes: int,
                 normalization: str = "imagenet", align_corners: bool = False, hr_crop_size: Sequence[int] = (512, 512),
                 context_scale: float = 0.5, crop_divisible: int = 8, detail_loss_weight: float = 0.1,
                 detail_slide: bool = True) -> None:  # fmt: skip
        super().__init__(backbone, head, num_classes, normalization, align_corners)
        if not 0 < context_scale < 1:
            raise ValueError(f"hrda.context_scale must be in (0, 1), got {context_scale}")
        self.attention = attention
        self.hr_crop_size = (int(hr_crop_size[0]), int(hr_crop_size[1]))
        self.context_scale = float(context_scale)
        self.crop_divisible = int(crop_divisible)
        self.detail_loss_weight = float(detail_loss_weight)
        self.detail_slide = bool(detail_slide)

    @property
    def upscale(self) -> float:
        return 1 / self.context_scale

    def context_view(self, x: torch.Tensor) -> torch.Tensor:
        """The (normalised) input at the context scale: what the context pass and the feature distance see."""
        return F.interpolate(x, scale_factor=self.context_scale, mode="bilinear", align_corners=self.align_corners)

    def _context(self, x: torch.Tensor) -> tuple[SegOutput, torch.Tensor]:
        feats = self.backbone(self.context_view(x))
        logits, feat, *rest = self.head(feats)
        attention = torch.sigmoid(self.attention(feats)[0])
        return SegOutput(logits, feat, rest[0] if rest else None, feats), attention

    def _detail(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the whole image at full resolution: overlapping windows in one batch (or the image whole)."""
        h, w = x.shape[-2:]
        if not self.detail_slide or (h <= self.hr_crop_size[0] and w <= self.hr_crop_size[1]):
            return self.head(self.backbone(x))[0]
        stride = (self.hr_crop_size[0] // 2, self.hr_crop_size[1] // 2)
        boxes = sliding_boxes(h, w, self.hr_crop_size, stride)
        logits = self.head(self.backbone(torch.cat([b.of(x) for b in boxes])))[0]
        scaled = [b.scaled(self.output_stride) for b in boxes]  # window i: rows i·B … (i+1)·B of the batch
        size = (max(b.y2 for b in scaled), max(b.x2 for b in scaled))
        return stitch_windows(zip(scaled, logits.split(x.shape[0])), size)

    @property
    def size_multiple(self) -> int:
        """The image sides the two scales line up on: the context's logits, up-sampled by 1/context_scale, land on the
        detail's grid (output stride × upscale), and detail windows sit on the crop grid."""
        return math.lcm(round(self.output_stride * self.upscale), self.crop_divisible)

    def forward(self, x: torch.Tensor) -> SegOutput:
        """Inference: the context of the whole image and the detail of every window, fused (logits at the output
        stride of the full-resolution image). Sides that are not a multiple of `size_multiple` (an image smaller than
        the sliding window, an odd-sized one) are padded with the mean colour and the logits cropped back."""
        h, w = x.shape[-2:]
        m = self.size_multiple
        x = self.normalize(x)
        if h % m or w % m:  # normalised zeros: the mean colour
            padded = self.forward_normalized(F.pad(x, (0, -w % m, 0, -h % m)))
            rows, cols = -(-h // self.output_stride), -(-w // self.output_stride)
            return SegOutput(padded.logits[..., :rows, :cols], padded.feat[..., :rows, :cols], None, padded.encoder)
        return self.forward_normalized(x)

    def forward_normalized(self, x: torch.Tensor) -> SegOutput:
        """`forward` on an already normalised image whose sides are multiples of `size_multiple`."""
        context, attention = self._context(x)
        detail = self._detail(x)
        fused = fuse_scales(context.logits, attention, detail, self.upscale, self.output_stride,
                            align_corners=self.align_corners)  # fmt: skip
        # the context features brought to the fused logits' grid: every consumer of `feat` (centroids, nearest-
        # centroid labels) pairs it pixel by pixel with the prediction
        feat = F.interpolate(context.feat, size=fused.shape[-2:], mode="bilinear", align_corners=self.align_corners)
        return SegOutput(fused, feat, None, context.encoder)

    def features_view(self, x: torch.Tensor) -> torch.Tensor:
        return self.context_view(x)

    def probe_detail_box(self, size: Sequence[int], crop: Sequence[int]) -> CropBox:
        """The detail window of a probe of `size` standing in for a training crop `crop`: the same share of the crop
        (on the window grid), so the probe's activations scale with the area like the real step's."""
        grid = self.crop_divisible
        side = [max(grid, round(s * hr / c / grid) * grid) for s, hr, c in zip(size, self.hr_crop_size, crop)]
        return CropBox(0, min(side[0], size[0]), 0, min(side[1], size[1]))

    @contextmanager
    def scaled_for_probe(self, factor: int) -> Iterator[None]:
        """The detail window `factor`× smaller per side (on the window grid), for inference on images as much smaller:
        the same number of detail windows, each with 1/factor² of the pixels."""
        saved = self.hr_crop_size
        grid = self.crop_divisible
        self.hr_crop_size = tuple(max(grid, s // factor // grid * grid) for s in saved)  # type: ignore[assignment]
        try:
            yield
        finally:
            self.hr_crop_size = saved

    def forward_train(self, x: torch.Tensor, detail_box: CropBox | None = None,
                      generator: torch.Generator | None = None) -> TrainingPass:  # fmt: skip
        """Training: the context of the whole crop and the detail of one window (`detail_box`, or a random one)."""
        x = self.normalize(x)
        box = detail_box or random_crop_box(*x.shape[-2:], self.hr_crop_size, self.crop_divisible, generator)
        context, attention = self._context(x)
        detail = self.head(self.backbone(box.of(x)))[0]
        fused = fuse_scales(context.logits, attention, detail, self.upscale, self.output_stride, box,
                            self.align_corners)  # fmt: skip
        return TrainingPass(fused, context, detail, box)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().param_groups()
        groups["head"] += [p for p in self.attention.parameters() if p.requires_grad]
        return groups
