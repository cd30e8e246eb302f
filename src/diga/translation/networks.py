"""Translator networks: MUNIT/TridentAdapt-style encoder, decoder, multi-scale LSGAN discriminator.

`width` and `n_res` default to the reference (64 → 256 channels, 4 residual blocks); the toy benchmark uses
smaller ones. InstanceNorm without affine/running stats, so train and eval mode behave identically.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diga.models.activation_checkpointing import checkpointed


def conv_block(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0, norm: bool = True,
               act: str | None = "relu", pad_mode: str = "reflect", bias: bool = True) -> nn.Sequential:  # fmt: skip
    layers: list[nn.Module] = []
    if pad:
        layers.append(nn.ReflectionPad2d(pad) if pad_mode == "reflect" else nn.ZeroPad2d(pad))
    layers.append(nn.Conv2d(cin, cout, k, stride, bias=bias))
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=False, track_running_stats=False))
    if act == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif act == "lrelu":
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    elif act == "tanh":
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """[3×3 conv, IN, ReLU] → [3×3 conv, IN] + identity (no activation after the add)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_block(ch, ch, 3, pad=1), conv_block(ch, ch, 3, pad=1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _CheckpointableSequential(nn.Module):
    """`self.net`; with checkpointing on, only the network's input is kept for the backward pass and the whole
    network is recomputed there (one extra forward). The translator calls each network several times per step
    (translation, self-reconstruction, cycle), so this is where its memory goes."""

    net: nn.Sequential
    grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpointed(self.net, x) if self.grad_checkpointing else self.net(x)


class ImgEncoder(_CheckpointableSequential):
    """7×7 conv → two stride-2 4×4 convs → residual blocks. Output: 4·width channels at 1/4 resolution."""

    def __init__(self, width: int = 64, n_res: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv_block(3, width, 7, pad=3),
            conv_block(width, 2 * width, 4, stride=2, pad=1),
            conv_block(2 * width, 4 * width, 4, stride=2, pad=1),
            *[ResBlock(4 * width) for _ in range(n_res)],
        )


class ImgDecoder(_CheckpointableSequential):
    """Residual blocks → 2× [nearest ×2, 5×5 conv, IN, ReLU] → 7×7 conv → tanh (image in [−1, 1])."""

    def __init__(self, width: int = 64, n_res: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            *[ResBlock(4 * width) for _ in range(n_res)],
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv_block(4 * width, 2 * width, 5, pad=2),
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv_block(2 * width, width, 5, pad=2),
            conv_block(width, 3, 7, pad=3, norm=False, act="tanh"),
        )


class MultiScaleDiscriminator(nn.Module):
    """`num_scales` patch discriminators on progressively avg-pooled inputs; returns a list of patch maps."""

    def __init__(self, width: int = 64, n_layers: int = 4, num_scales: int = 3) -> None:
        super().__init__()

        def one() -> nn.Sequential:
            layers, c = [], 3
            for i in range(n_layers):
                layers.append(conv_block(c, width * 2**i, 4, stride=2, pad=1, norm=False, act="lrelu",
                                         pad_mode="zero", bias=False))  # fmt: skip
                c = width * 2**i
            layers.append(nn.Conv2d(c, 1, 1))
            return nn.Sequential(*layers)

        self.nets = nn.ModuleList(one() for _ in range(num_scales))
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(checkpointed(net, x) if self.grad_checkpointing else net(x))
        return outs
