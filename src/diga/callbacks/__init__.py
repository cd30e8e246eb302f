"""Lightning callbacks of diga."""

from diga.callbacks.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss

__all__ = ["NonFiniteLossError", "StopOnNonFiniteLoss"]
