"""Source → target image translators with one interface: `translate(x_src, x_tgt_ref) → image in [0, 1]`.

* `LearnedTranslator`: the stage-0 networks `dec_s2t(enc_s(·))`, frozen, eval mode.
* `FourierTranslator` (FDA, Yang & Soatto 2020): swap the low-frequency amplitude spectrum with a target image's.
* `ColorStatsTranslator` (Reinhard-style): match per-channel mean/std to a target image's.
* `IdentityTranslator`: no translation (domain generalisation, semi-supervised).
Training-free translators need target *images* only (never target labels); a target reference is drawn per
source image from the current target batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from diga.models.weights import WeightFileError
from diga.translation.networks import ImgDecoder, ImgEncoder


class Translator(nn.Module):
    needs_target = False
    translates = True  # False: there is no second domain style; the warm-up's second view is then A(x) alone

    def translate(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.translate(x, target).clamp(0, 1)

    @staticmethod
    def _refs(x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if target is None or target.shape[0] == 0:
            raise ValueError("this translator needs a batch of target images")
        idx = torch.arange(x.shape[0], device=x.device) % target.shape[0]
        ref = target[idx]
        if ref.shape[-2:] != x.shape[-2:]:
            ref = nn.functional.interpolate(ref, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return ref


class IdentityTranslator(Translator):
    """T(x) = x. `translates=False` (kind none): no mixture, x̃ = A(x); `translates=True` (kind identity, an
    ablation): the mixture still runs, x̃ = (1 − M)·x + M·A(x)."""

    def __init__(self, translates: bool = False) -> None:
        super().__init__()
        self.translates = translates

    def translate(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return x


class FourierTranslator(Translator):
    """Replace the centred (2β·H × 2β·W) low-frequency amplitude of the source by the target's; keep the phase."""

    needs_target = True

    def __init__(self, beta: float = 0.01) -> None:
        super().__init__()
        self.beta = beta

    def translate(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        ref = self._refs(x, target)
        fs, ft = torch.fft.fft2(x.float()), torch.fft.fft2(ref.float())
        amp_s, pha_s, amp_t = fs.abs(), fs.angle(), ft.abs()
        h, w = x.shape[-2:]
        b = max(1, int(min(h, w) * self.beta))
        amp_s = torch.fft.fftshift(amp_s, dim=(-2, -1))
        amp_t = torch.fft.fftshift(amp_t, dim=(-2, -1))
        ch, cw = h // 2, w // 2
        amp_s[..., ch - b : ch + b + 1, cw - b : cw + b + 1] = amp_t[..., ch - b : ch + b + 1, cw - b : cw + b + 1]
        amp_s = torch.fft.ifftshift(amp_s, dim=(-2, -1))
        return torch.fft.ifft2(torch.polar(amp_s, pha_s)).real.to(x.dtype)


class ColorStatsTranslator(Translator):
    """Per-image, per-channel mean/std transfer from a target image."""

    needs_target = True

    def translate(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        ref = self._refs(x, target)
        mu_s, sd_s = x.mean((-2, -1), keepdim=True), x.std((-2, -1), keepdim=True)
        mu_t, sd_t = ref.mean((-2, -1), keepdim=True), ref.std((-2, -1), keepdim=True)
        return (x - mu_s) / sd_s.clamp(min=1e-5) * sd_t + mu_t


class LearnedTranslator(Translator):
    """`dec_s2t(enc_s(x))` from a stage-0 translator file (`translator.pt`); inputs/outputs in [0, 1]."""

    def __init__(self, checkpoint: str | Path) -> None:
        super().__init__()
        path = Path(checkpoint)
        if not path.is_file():
            raise WeightFileError(f"{path}: translator checkpoint not found (run stage=translator first)")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or "enc_s" not in obj or "dec_s2t" not in obj:
            raise WeightFileError(f"{path}: not a translator file (needs 'enc_s' and 'dec_s2t' state dicts)")
        arch = obj.get("arch", {})
        self.enc_s, self.dec_s2t = ImgEncoder(**arch), ImgDecoder(**arch)
        from diga.models.weights import load_into

        load_into(self.enc_s, obj["enc_s"], path, "translator encoder")
        load_into(self.dec_s2t, obj["dec_s2t"], path, "translator decoder")
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> LearnedTranslator:  # always frozen, eval
        return super().train(False)

    def translate(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return (self.dec_s2t(self.enc_s(x * 2 - 1)) + 1) / 2


# training-free translators take their style from target images, so the loader must provide them
STYLE_FROM_TARGET = ("fourier", "color")


def needs_target_images(kind: str) -> bool:
    """Whether a translator of this kind reads target images at every step (the loader must provide them)."""
    return kind in STYLE_FROM_TARGET


def build_translator(kind: str = "none", checkpoint: str | None = None, fourier_beta: float = 0.01) -> Translator:
    if kind == "learned":
        if not checkpoint:
            raise ValueError("translator.kind=learned needs translator.checkpoint (a stage=translator output)")
        return LearnedTranslator(checkpoint)
    if kind == "fourier":
        return FourierTranslator(fourier_beta)
    if kind == "color":
        return ColorStatsTranslator()
    if kind == "none":
        return IdentityTranslator()
    if kind == "identity":
        return IdentityTranslator(translates=True)
    raise ValueError(f"unknown translator kind {kind!r} (learned | fourier | color | identity | none)")
