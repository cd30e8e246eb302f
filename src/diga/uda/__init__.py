"""DAFormer's and MIC's training strategies as separate components: ImageNet feature distance, confidence-weighted
pseudo-labels and masked image consistency. Rare class sampling chooses source images, so it lives with the data
loading: `diga.data.rare_class_sampling`."""

from diga.uda.confidence import DAFORMER_PSEUDO_THRESHOLD, PseudoLabels, confidence_weighted_pseudo_labels
from diga.uda.feature_distance import (
    CITYSCAPES_THING_CLASSES,
    DAFORMER_FD_LAMBDA,
    DAFORMER_FD_SCALE_MIN_RATIO,
    ImageNetFeatureDistance,
    downscale_label_ratio,
    masked_feature_distance,
    thing_classes,
    thing_mask,
)
from diga.uda.masking import (
    MIC_LAMBDA,
    MIC_MASK_BLOCK_SIZE,
    MIC_MASK_RATIO,
    BlockMaskGenerator,
    MaskedImageConsistency,
    mask_images,
    masked_consistency_loss,
)

__all__ = [
    "CITYSCAPES_THING_CLASSES",
    "DAFORMER_FD_LAMBDA",
    "DAFORMER_FD_SCALE_MIN_RATIO",
    "DAFORMER_PSEUDO_THRESHOLD",
    "MIC_LAMBDA",
    "MIC_MASK_BLOCK_SIZE",
    "MIC_MASK_RATIO",
    "BlockMaskGenerator",
    "ImageNetFeatureDistance",
    "MaskedImageConsistency",
    "PseudoLabels",
    "confidence_weighted_pseudo_labels",
    "downscale_label_ratio",
    "mask_images",
    "masked_consistency_loss",
    "masked_feature_distance",
    "thing_classes",
    "thing_mask",
]
