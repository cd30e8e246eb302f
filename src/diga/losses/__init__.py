"""Loss functions of the method, as pure functions of tensors."""

from diga.losses.segmentation import cross_entropy, ohem_cross_entropy

__all__ = ["cross_entropy", "ohem_cross_entropy"]
