"""DAFormer's thing-class ImageNet feature distance (FD): keep the encoder's last-stage features on source "thing"
pixels close to those of the frozen ImageNet-initialised encoder, so adaptation does not forget what ImageNet
taught about objects.

    L_FD = λ · mean_{(b,i,j) ∈ M} ‖F_θ(x)_bij − F_ImNet(x)_bij‖₂,   λ = 0.005, last encoder stage only,

with M the feature pixels whose down-scaled source label is a thing class. A label pixel of the feature grid is the
majority class of its s×s block (s = label width // feature width) if that class covers ≥ 75 % of the block, else
ignore (DAFormer's `downscale_label_ratio`, `imnet_feature_dist_scale_min_ratio` 0.75).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from diga.data.labels import IGNORE_INDEX, LabelSet, get_label_set
from diga.utils.precision import float32_math
from diga.utils.tensors import count_values

DAFORMER_FD_LAMBDA = 0.005
DAFORMER_FD_SCALE_MIN_RATIO = 0.75
# DAFormer's thing classes (`imnet_feature_dist_classes`), by name: their train-ids depend on the label set.
THING_CLASS_NAMES = (
    "traffic light",
    "traffic sign",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)


def thing_classes(label_set: str | LabelSet) -> tuple[int, ...]:
    """Train-ids of DAFormer's thing classes in `label_set` (by name: e.g. SYNTHIA-16 has no truck or train)."""
    labels = get_label_set(label_set) if isinstance(label_set, str) else label_set
    return tuple(i for i, name in enumerate(labels.classes) if name in THING_CLASS_NAMES)


CITYSCAPES_THING_CLASSES = thing_classes("cityscapes19")  # 6, 7, 11–18: DAFormer's list for Cityscapes-19


def downscale_label_ratio(
    labels: torch.Tensor, scale_factor: int, min_ratio: float = DAFORMER_FD_SCALE_MIN_RATIO, num_classes: int = 19
) -> torch.Tensor:
    """B×H×W (or B×1×H×W) labels → B×(H//s)×(W//s): each s×s block's majority value if it covers ≥ `min_ratio`.

    255 competes as its own value (a mostly-void block is void); blocks without a dominant value become 255.
    Counts are exact integers (counted per block, no one-hot of the full-resolution map).
    """
    if scale_factor <= 1:
        raise ValueError(f"downscale_label_ratio needs a scale factor > 1, got {scale_factor}")
    if labels.dim() == 4:
        labels = labels.squeeze(1)
    b, h, w = labels.shape
    s = int(scale_factor)
    th, tw = h // s, w // s
    lab = labels[:, : th * s, : tw * s].long()
    lab = torch.where((lab >= 0) & (lab < num_classes), lab, num_classes)  # void (and anything else) → column C
    block = (torch.arange(th * s, device=lab.device) // s).view(1, -1, 1) * tw + (
        torch.arange(tw * s, device=lab.device) // s
    ).view(1, 1, -1)
    flat = (torch.arange(b, device=lab.device).view(-1, 1, 1) * (th * tw) + block) * (num_classes + 1) + lab
    counts = count_values(flat, b * th * tw * (num_classes + 1))
    counts = counts.view(b, th, tw, num_classes + 1)
    top, value = counts.max(dim=-1)
    ratio = top.float() / float(s * s)
    value = torch.where(value == num_classes, IGNORE_INDEX, value)
    return torch.where(ratio < min_ratio, IGNORE_INDEX, value)


def thing_mask(
    labels: torch.Tensor,
    feat_size: Sequence[int],
    classes: Sequence[int] = CITYSCAPES_THING_CLASSES,
    num_classes: int = 19,
    min_ratio: float = DAFORMER_FD_SCALE_MIN_RATIO,
) -> torch.Tensor:
    """B×h×w bool: feature pixels whose down-scaled label is one of `classes` (DAFormer's FD mask).

    The scale factor is label width // feature width, as in DAFormer.
    """
    scale = labels.shape[-1] // int(feat_size[-1])
    small = downscale_label_ratio(labels, scale, min_ratio, num_classes)
    wanted = torch.as_tensor(list(classes), device=labels.device, dtype=torch.long)
    return torch.isin(small, wanted)


@float32_math
def masked_feature_distance(
    feat: torch.Tensor, feat_imnet: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over the masked pixels of the L2 distance over channels (DAFormer `masked_feat_dist`).

    An empty mask gives 0 (still attached to `feat`); DAFormer returns NaN there, which has no gradient either but
    would stop a run under `StopOnNonFiniteLoss`. A weighted sum, not `dist[mask]`: boolean indexing waits for the
    device to count the selected pixels.
    """
    dist = torch.norm(feat - feat_imnet, dim=1, p=2)
    if mask is None:
        return dist.mean()
    if mask.dim() == 4:
        mask = mask.squeeze(1)
    m = mask.to(dist.dtype)
    return (dist * m).sum() / m.sum().clamp(min=1)


class ImageNetFeatureDistance(nn.Module):
    """The frozen ImageNet encoder and DAFormer's thing-class feature distance to it.

    Build it from the encoder *as initialised from ImageNet* (before any training or warm-up checkpoint): the
    encoder is deep-copied, frozen and kept in eval mode (dropout and drop-path off) whatever `train()` says.
    `forward(x, student_features, labels)` returns λ · distance on the encoder's last stage.

    Args:
        encoder: module whose forward returns a list of feature maps (diga backbones).
        num_classes: classes of the label space (255 = ignore).
        classes: train-ids whose pixels count; None = all feature pixels (DAFormer's plain FD).
        weight: λ (DAFormer `imnet_feature_dist_lambda` = 0.005).
        scale_min_ratio: DAFormer `imnet_feature_dist_scale_min_ratio` = 0.75.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int = 19,
        classes: Sequence[int] | None = CITYSCAPES_THING_CLASSES,
        weight: float = DAFORMER_FD_LAMBDA,
        scale_min_ratio: float = DAFORMER_FD_SCALE_MIN_RATIO,
    ) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        self.num_classes, self.weight, self.scale_min_ratio = num_classes, weight, scale_min_ratio
        self.classes = None if classes is None else tuple(int(c) for c in classes)

    def train(self, mode: bool = True) -> ImageNetFeatureDistance:
        super().train(mode)
        self.encoder.eval()
        return self

    @torch.no_grad()
    def imagenet_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage features of the frozen encoder (x: what the encoder takes, e.g. `segmentor.normalize(img)`)."""
        self.encoder.eval()
        return self.encoder(x)[-1].detach()

    def mask(self, labels: torch.Tensor, feat_size: Sequence[int]) -> torch.Tensor | None:
        if self.classes is None:
            return None
        return thing_mask(labels, feat_size, self.classes, self.num_classes, self.scale_min_ratio)

    def forward(
        self, x: torch.Tensor, student_features: Sequence[torch.Tensor] | torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """λ · FD between the student's last-stage features (with grad) and the frozen encoder's on the same `x`."""
        feat = student_features if isinstance(student_features, torch.Tensor) else student_features[-1]
        feat_imnet = self.imagenet_features(x)
        return self.weight * masked_feature_distance(feat, feat_imnet, self.mask(labels, feat.shape[-2:]))
