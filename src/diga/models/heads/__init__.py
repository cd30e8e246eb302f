"""Decode heads. Each returns `(logits, feat)` or `(logits, feat, aux_logits)`: class scores, the feature map used for
class centroids and, for OCR, the auxiliary soft-object-region logits. Importing this package registers them."""

from diga.models.heads.aspp import DeepLabV2Head
from diga.models.heads.daformer import DAFormerHead
from diga.models.heads.ocr import OCRHead
from diga.models.heads.segformer import SegFormerHead

__all__ = ["DAFormerHead", "DeepLabV2Head", "OCRHead", "SegFormerHead"]
