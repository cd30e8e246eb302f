"""Encoder + decode head + input normalisation = one segmentation network."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from diga.models.weights import WeightFileError, load_into, read_state_dict

# Input normalisations. Datasets deliver RGB in [0, 1]; the network owns the mapping its weights expect.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)  # REF loaders: (BGR·255 − mean) / 128


class SegOutput(NamedTuple):
    logits: torch.Tensor  # B×C×h×w at the head's output stride
    feat: torch.Tensor  # B×D×h×w, the feature used for class centroids
    aux: torch.Tensor | None = None  # B×C×h×w auxiliary logits (OCR's soft object regions), if the head has them
    encoder: list[torch.Tensor] | None = None  # the encoder's feature maps (the ImageNet feature distance uses them)


class Normalize(nn.Module):
    def __init__(self, kind: str = "imagenet") -> None:
        super().__init__()
        if kind == "imagenet":
            mean, scale, bgr = torch.tensor(IMAGENET_MEAN), 1 / torch.tensor(IMAGENET_STD), False
        elif kind in ("caffe_bgr", "caffe_rgb"):  # (x·255 − Caffe mean) / 128, in BGR (DeepLab) or RGB (HRNet) order
            mean, scale, bgr = (
                torch.tensor(CAFFE_BGR_MEAN[::-1]) / 255.0,
                torch.full((3,), 255.0 / 128.0),
                kind == "caffe_bgr",
            )
        else:
            raise ValueError(f"unknown input normalisation {kind!r} (imagenet | caffe_bgr | caffe_rgb)")
        self.kind, self.bgr = kind, bgr
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * self.scale
        return x.flip(1) if self.bgr else x


class Segmentor(nn.Module):
    """`forward(x)` takes RGB images in [0, 1] (B×3×H×W) and returns `SegOutput(logits, feat)` at head resolution.

    Attributes:
        num_classes, feat_dim, output_stride: what downstream stages need to know (e.g. centroid size).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        num_classes: int,
        normalization: str = "imagenet",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(normalization)
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.feat_dim: int = head.feat_dim
        self.output_stride: int = backbone.strides[0] if len(backbone.strides) > 1 else backbone.strides[-1]
        self.align_corners = align_corners  # for up-sampling logits to the input (REF DeepLab: True)

    @property
    def min_input_side(self) -> int:
        """The smallest image side the encoder takes (its coarsest stride: one pixel there)."""
        return int(getattr(self.backbone, "min_input_side", max(self.backbone.strides)))

    def forward(self, x: torch.Tensor) -> SegOutput:
        feats = self.backbone(self.normalize(x))
        head = self.head(feats)
        return SegOutput(head[0], head[1], head[2] if len(head) > 2 else None, feats)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by role — for the usual 1× backbone / 10× head learning rates. No duplicates."""
        return {
            "backbone": [p for p in self.backbone.parameters() if p.requires_grad],
            "head": [p for p in self.head.parameters() if p.requires_grad],
        }

    def load_weights(self, path: str | Path) -> int:
        """Load a whole segmentor from one of diga's own checkpoints (Lightning `.ckpt` or exported `.pt`).

        Lightning checkpoints hold the model under a module attribute (`model.`, `student.`); the first prefix
        under which every segmentor tensor is found is used.
        """
        sd = read_state_dict(path)
        own = self.state_dict()
        for prefix in ("", "model.", "student.", "net."):
            cand = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            if all(k in cand for k in own):
                return load_into(self, cand, path, "segmentor")
        raise WeightFileError(
            f"{path}: not a checkpoint of this segmentor (none of the prefixes '', model., student., net. "
            f"hold all {len(own)} tensors; e.g. {next(iter(own))!r} missing)"
        )
