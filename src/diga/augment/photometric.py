"""The photometric "extra" view with its β blend, built on kornia (per-sample random, on device).

`A(x) = β · aug(x) + (1 − β) · x`.

space="rgb01" (default, correct): `x` is RGB in [0, 1]; the colour ops see what they are designed for.
space="reference": reproduces the reference exactly — the ops run on the Caffe-normalised BGR tensor
  `(BGR·255 − mean)/128` as if it were RGB in [0, 1] (clamping, HSV on BGR), followed by `N(z) = 2z − 1`; the
  result is mapped back to RGB [0, 1] for the network. Use only to reproduce published numbers.

The random parameters are drawn on the host, from the step-seeded CPU generator, whatever device the images are
on: kornia decides which ops fire and in which order with Python `if`s on its parameters, and with the parameters on
a GPU each of those would make the host wait for the device (about a dozen times per call). Drawn on the host they
cost nothing, and a GPU run draws the same augmentations as a CPU run.
"""

from __future__ import annotations

from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from diga.models.segmentor import CAFFE_BGR_MEAN


class PhotometricAugment(nn.Module):
    def __init__(self, beta: float = 0.4, jitter_p: float = 0.5, grayscale_p: float = 0.3, blur_p: float = 0.8,
                 sharpness_p: float = 0.3, space: str = "rgb01",
                 jitter_strength: tuple[float, ...] = (0.4, 0.4, 0.2, 0.1), blur_kernel: int = 3,
                 blur_sigma: tuple[float, float] = (2.0, 2.0)) -> None:  # fmt: skip
        super().__init__()
        if space not in ("rgb01", "reference"):
            raise ValueError(f"photometric space must be 'rgb01' or 'reference', got {space!r}")
        self.beta, self.space = beta, space
        jitter = K.ColorJitter if space == "rgb01" else K.ColorJiggle  # kornia 0.5 semantics (additive brightness)
        ops: list[nn.Module] = [
            jitter(*jitter_strength, p=jitter_p),
            K.RandomGrayscale(p=grayscale_p),
            K.RandomGaussianBlur((blur_kernel, blur_kernel), tuple(blur_sigma), p=blur_p),
        ]
        if sharpness_p > 0:
            ops.append(K.RandomSharpness(0.5, p=sharpness_p))
        self.ops = nn.Sequential(*ops)
        self.register_buffer("_mean", torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1) / 255.0, persistent=False)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> PhotometricAugment:
        """Moving the module (`.to(device)`) moves kornia's parameter sampling with it; keep that on the host."""
        out = super()._apply(fn, *args, **kwargs)
        for op in self.ops:
            op.set_rng_device_and_dtype(torch.device("cpu"), torch.float32)
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor, beta: float | None = None) -> torch.Tensor:
        beta = self.beta if beta is None else beta
        if self.space == "rgb01":
            return beta * self.ops(x).clamp(0, 1) + (1 - beta) * x
        ref = (x.flip(1) - self._mean) * (255.0 / 128.0)  # REF network input
        out = beta * (2 * self.ops(ref) - 1) + (1 - beta) * ref
        return (out * (128.0 / 255.0) + self._mean).flip(1)
