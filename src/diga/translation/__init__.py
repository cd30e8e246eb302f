"""Image domain translation source → target: the learned translator of stage 0 and training-free options."""

from diga.translation.translators import (
    ColorStatsTranslator,
    FourierTranslator,
    IdentityTranslator,
    LearnedTranslator,
    Translator,
    build_translator,
    needs_target_images,
)

__all__ = ["ColorStatsTranslator", "FourierTranslator", "IdentityTranslator", "LearnedTranslator", "Translator",
           "build_translator", "needs_target_images"]  # fmt: skip
