"""Class-mask sampling and image mixing (CrDoMix in the warm-up, DACS class-mix in self-training)."""

from diga.mixing.class_mask import sample_class_masks
from diga.mixing.crdomix import second_view
from diga.mixing.mix import mix_images, mix_labels

__all__ = ["mix_images", "mix_labels", "sample_class_masks", "second_view"]
