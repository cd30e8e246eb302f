"""Batch-level photometric augmentation on the accelerator (the reference's "extra" augmentation)."""

from diga.augment.photometric import PhotometricAugment

__all__ = ["PhotometricAugment"]
