"""Encoders built from timm, with local-file weight loading. Importing this package registers them."""

from diga.models.backbones.mit import MiTBackbone
from diga.models.backbones.resnet import ResNetBackbone

__all__ = ["MiTBackbone", "ResNetBackbone"]
