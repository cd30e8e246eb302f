"""Loss functions of the method, as pure functions of tensors."""

from diga.losses.distillation import soft_cross_entropy, symmetric_distillation
from diga.losses.factory import build_seg_loss
from diga.losses.segmentation import cross_entropy, ohem_cross_entropy

__all__ = ["build_seg_loss", "cross_entropy", "ohem_cross_entropy", "soft_cross_entropy", "symmetric_distillation"]
