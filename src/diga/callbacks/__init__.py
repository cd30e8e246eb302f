"""Lightning callbacks of diga."""

from diga.callbacks.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss
from diga.callbacks.target_previews import TargetPreviews

__all__ = ["NonFiniteLossError", "StopOnNonFiniteLoss", "TargetPreviews"]
