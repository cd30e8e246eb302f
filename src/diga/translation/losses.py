"""Translator losses: LSGAN, semantic-edge L1, VGG-19 perceptual loss from a local file."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from diga.models.activation_checkpointing import checkpointed
from diga.models.weights import WeightFileError, load_into, read_state_dict


def lsgan_d_loss(real_maps: list[torch.Tensor], fake_maps: list[torch.Tensor]) -> torch.Tensor:
    """Σ_k mean((D_k(real) − 1)²) + mean(D_k(fake)²)."""
    return sum(((r - 1) ** 2).mean() + (f**2).mean() for r, f in zip(real_maps, fake_maps))  # type: ignore[return-value]


def lsgan_g_loss(fake_maps: list[torch.Tensor]) -> torch.Tensor:
    """Σ_k mean((D_k(fake) − 1)²)."""
    return sum(((f - 1) ** 2).mean() for f in fake_maps)  # type: ignore[return-value]


def discriminator_loss(dis_s2t: nn.Module, dis_t2s: nn.Module, s: torch.Tensor, t: torch.Tensor,
                       s2t: torch.Tensor, t2s: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Both discriminators: real target vs detached s2t, real source vs detached t2s (LSGAN, summed over scales)."""
    return lsgan_d_loss(dis_s2t(t), dis_s2t(s2t.detach())) + lsgan_d_loss(dis_t2s(s), dis_t2s(t2s.detach()))


def generator_losses(out: dict[str, torch.Tensor], s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                     dis_s2t: nn.Module, dis_t2s: nn.Module, vgg: nn.Module | None,
                     weights: dict[str, float]) -> dict[str, torch.Tensor]:  # fmt: skip
    """The translator's generator/encoder objective and its parts.

    L_G = w_adv·[LSGAN(s2t) + LSGAN(t2s)] + w_cyc·[L1(s_cyc, s) + L1(t_cyc, t)] + w_edge·L_edge(s2t, s, y)
        + w_percep·[VGG(s2t, s) + VGG(t2s, t)] + w_self·[L1(s_rec, s) + L1(t_rec, t)]
    `out` holds the translations (s2t, t2s), self-reconstructions (s_rec, t_rec) and cycles (s_cyc, t_cyc).
    """
    adv = lsgan_g_loss(dis_s2t(out["s2t"])) + lsgan_g_loss(dis_t2s(out["t2s"]))
    cyc = F.l1_loss(out["s_cyc"], s) + F.l1_loss(out["t_cyc"], t)
    edge = seg_edge_loss(out["s2t"], s, labels)
    rec = F.l1_loss(out["s_rec"], s) + F.l1_loss(out["t_rec"], t)
    percep = vgg(out["s2t"], s) + vgg(out["t2s"], t) if vgg is not None else s.new_zeros(())
    total = (weights["w_adv"] * adv + weights["w_cyc"] * cyc + weights["w_edge"] * edge
             + weights["w_percep"] * percep + weights["w_self"] * rec)  # fmt: skip
    return {"loss_g": total, "loss_adv": adv, "loss_cyc": cyc, "loss_edge": edge, "loss_self": rec,
            "loss_percep": percep}  # fmt: skip


def label_edges(labels: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """B×H×W bool: |Laplacian₅(labels)| > threshold, kornia-0.5 normalisation (5×5 ones, centre −24, divided by 48),
    reflect border. So a pixel is an edge when the neighbour-weighted id difference exceeds 4.8."""
    k = torch.ones(5, 5, dtype=torch.float32, device=labels.device)
    k[2, 2] = -24
    k = (k / 48.0).view(1, 1, 5, 5)
    x = F.pad(labels.float().unsqueeze(1), (2, 2, 2, 2), mode="reflect")
    return (F.conv2d(x, k).abs() > threshold).squeeze(1)


def seg_edge_loss(translated: torch.Tensor, source: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L1(in ⊙ E, out ⊙ E), mean over *all* pixels: keep label boundaries where they were."""
    e = label_edges(labels).unsqueeze(1).to(source.dtype)
    return F.l1_loss(translated * e, source * e)


class VGGPerceptual(nn.Module):
    """Frozen VGG-19 features: taps after relu1_1…relu5_1, weights 1/32, 1/16, 1/8, 1/4, 1; L1 between taps.

    Needs torchvision's ImageNet `vgg19` weights in a local file; asking for this loss without the file is an
    error (a random VGG would silently make the loss meaningless).
    """

    SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
    WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

    def __init__(self, weights_path: str | Path | None) -> None:
        super().__init__()
        from torchvision.models import vgg19

        if not weights_path or not Path(weights_path).is_file():
            raise WeightFileError(
                f"{weights_path}: VGG-19 ImageNet weights for the perceptual loss not found. Put torchvision's "
                "vgg19-dcbb9e9d.pth there, or set the perceptual weight to 0."
            )
        features = vgg19(weights=None).features
        sd = {k.removeprefix("features."): v for k, v in read_state_dict(weights_path).items()
              if k.startswith("features.")}  # fmt: skip
        load_into(features, sd, weights_path, "VGG-19 features")
        self.slices = nn.ModuleList(features[a:b] for a, b in self.SLICES)
        self.requires_grad_(False).eval()
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each VGG slice in the backward pass (the loss back-propagates into the translated image)."""
        self.grad_checkpointing = enable

    def train(self, mode: bool = True) -> VGGPerceptual:  # always frozen
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = x.new_zeros(())
        for w, s in zip(self.WEIGHTS, self.slices):
            x = checkpointed(s, x) if self.grad_checkpointing else s(x)
            with torch.no_grad():
                y = s(y)
            loss = loss + w * F.l1_loss(x, y.detach())
        return loss
