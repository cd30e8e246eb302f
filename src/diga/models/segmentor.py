"""Encoder + decode head + input normalisation = one segmentation network."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from diga.models.weights import WeightFileError, load_into, read_state_dict
from diga.utils.windows import CropBox

# Input normalisations. Datasets deliver RGB in [0, 1]; the network owns the mapping its weights expect.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)  # REF loaders: (BGR·255 − mean) / 128


class SegOutput(NamedTuple):
    logits: torch.Tensor  # B×C×h×w at the head's output stride
    feat: torch.Tensor  # B×D×h×w, the feature used for class centroids
    aux: torch.Tensor | None = None  # B×C×h×w auxiliary logits (OCR's soft object regions), if the head has them
    encoder: list[torch.Tensor] | None = None  # the encoder's feature maps (the ImageNet feature distance uses them)


class TrainingPass(NamedTuple):
    """One training forward (`Segmentor.forward_train`). One resolution: `logits` and `features` are the forward's
    and the rest is None. HRDA: the fused logits, the context pass as `features`, the detail window's logits and
    box."""

    logits: torch.Tensor  # B×C×h×w at the output stride of the input
    features: SegOutput  # what the feature distance and the centroids read (HRDA: the context pass)
    detail: torch.Tensor | None = None  # logits of the detail window (HRDA)
    detail_box: CropBox | None = None  # the detail window, in input pixels


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

    Training stages call `forward_train`, `features_view`, `probe_detail_box` and `scaled_for_probe` and never ask
    which segmentor they hold: a multi-resolution model (`diga.models.hrda`) overrides these four.
    """

    detail_loss_weight: float = 0.0  # λ_d of the detail window's loss (multi-resolution models)

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

    def forward_train(self, x: torch.Tensor, detail_box: CropBox | None = None,
                      generator: torch.Generator | None = None) -> TrainingPass:  # fmt: skip
        """The training forward: here `forward` itself (`detail_box` and `generator` are for multi-resolution
        models, which draw a detail window)."""
        out = self(x)
        return TrainingPass(out.logits, out)

    def features_view(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised input as the pass that produced `TrainingPass.features` saw it (here: unchanged)."""
        return x

    def probe_detail_box(self, size: Sequence[int], crop: Sequence[int]) -> CropBox | None:
        """For a memory probe of `size` standing in for a training crop `crop`: the detail window that keeps its share
        of the crop (multi-resolution models), else None."""
        return None

    @contextmanager
    def scaled_for_probe(self, factor: int) -> Iterator[None]:
        """Inside: inference on images `factor`× smaller per side does the same work per pixel (multi-resolution
        models shrink their detail window with it). Here: nothing to change."""
        yield

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by role — for the usual 1× backbone / 10× head learning rates. No duplicates."""
        return {
            "backbone": [p for p in self.backbone.parameters() if p.requires_grad],
            "head": [p for p in self.head.parameters() if p.requires_grad],
        }

    def load_weights(self, path: str | Path, state: Mapping[str, torch.Tensor] | None = None) -> int:
        """Load a whole segmentor from one of diga's own checkpoints (Lightning `.ckpt` or exported `.pt`).

        Lightning checkpoints hold the model under a module attribute (`model.`, `student.`); the first prefix
        under which every segmentor tensor is found is used. `state`: the file's tensors when already read.
        """
        sd = read_state_dict(path) if state is None else state
        own = self.state_dict()
        for prefix in ("", "model.", "student.", "net."):
            cand = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            if all(k in cand for k in own):
                return load_into(self, cand, path, "segmentor")
        raise WeightFileError(
            f"{path}: not a checkpoint of this segmentor (none of the prefixes '', model., student., net. "
            f"hold all {len(own)} tensors; e.g. {next(iter(own))!r} missing)"
        )
