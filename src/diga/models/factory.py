"""Model registry: a name (`segformer_b5`, `daformer_b5`, `deeplabv2_r101`, …) → `Segmentor`.

Configs in conf/model/ call `build_segmentor` with the name and options; tests and scripts call it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from diga.models.backbones import MiTBackbone, ResNetBackbone
from diga.models.heads import DAFormerHead, DeepLabV2Head, SegFormerHead
from diga.models.segmentor import Segmentor

HEADS: dict[str, Callable[..., nn.Module]] = {
    "segformer": SegFormerHead,
    "daformer": DAFormerHead,
    "deeplabv2": DeepLabV2Head,
}


def build_segmentor(
    backbone: str = "mit_b5",
    head: str = "segformer",
    num_classes: int = 19,
    embed_dim: int | None = None,
    pretrained: str | Path | None = None,
    weights: str | Path | None = None,
    drop_path_rate: float = 0.1,
    dropout: float = 0.1,
    normalization: str | None = None,
    align_corners: bool | None = None,
    feat_after_dropout: bool = False,
) -> Segmentor:
    """Build a segmentor.

    Args:
        backbone: `mit_b0`…`mit_b5` or `resnet101`/`resnet50` (dilated, output stride 8).
        head: `segformer`, `daformer` or `deeplabv2`.
        embed_dim: head width; default 256 for b0/b1 and DeepLab/DAFormer, 768 for SegFormer b2–b5.
        pretrained: ImageNet encoder weights (local file).
        weights: a whole-model checkpoint of diga (overrides `pretrained`).
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {sorted(HEADS)}")
    if backbone.startswith("mit_"):
        enc: nn.Module = MiTBackbone(
            backbone, pretrained=None if weights else pretrained, drop_path_rate=drop_path_rate
        )
        default_dim = 768 if head == "segformer" and backbone not in ("mit_b0", "mit_b1") else 256
        normalization = normalization or "imagenet"
        align_corners = bool(align_corners)
    elif backbone.startswith("resnet"):
        enc = ResNetBackbone(backbone, pretrained=None if weights else pretrained)
        default_dim = 256
        normalization = normalization or "imagenet"
        align_corners = True if align_corners is None else align_corners
    else:
        raise ValueError(f"unknown backbone {backbone!r} (mit_b0…mit_b5, resnet101, resnet50)")
    kwargs = {"embed_dim": embed_dim or default_dim, "dropout": dropout}
    if head == "deeplabv2":
        kwargs["feat_after_dropout"] = feat_after_dropout
    dec = HEADS[head](list(enc.channels), num_classes, **kwargs)
    model = Segmentor(enc, dec, num_classes, normalization=normalization, align_corners=align_corners)
    if weights:
        model.load_weights(weights)
    return model
