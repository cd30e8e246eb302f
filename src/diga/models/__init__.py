"""Segmentation networks: timm encoders + SegFormer / DAFormer / DeepLabV2 heads."""

from diga.models.factory import build_segmentor
from diga.models.segmentor import Segmentor, SegOutput

__all__ = ["SegOutput", "Segmentor", "build_segmentor"]
