"""Encoders built from timm, with local-file weight loading. Importing this package registers them (see
`diga.models.registry`): MiT (SegFormer), dilated ResNet (DeepLabV2), HRNetV2, DINOv2 ViTs, any timm CNN."""

from diga.models.backbones.hrnet import HRNetBackbone
from diga.models.backbones.mit import MiTBackbone
from diga.models.backbones.resnet import ResNetBackbone
from diga.models.backbones.timm_features import TimmFeatures
from diga.models.backbones.vit import ViTBackbone

__all__ = ["HRNetBackbone", "MiTBackbone", "ResNetBackbone", "TimmFeatures", "ViTBackbone"]
