"""Decode heads. Each returns `(logits, feat)`: class scores and the feature map used for class centroids."""

from diga.models.heads.aspp import DeepLabV2Head
from diga.models.heads.daformer import DAFormerHead
from diga.models.heads.segformer import SegFormerHead

__all__ = ["DAFormerHead", "DeepLabV2Head", "SegFormerHead"]
