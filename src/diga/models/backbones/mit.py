"""SegFormer's Mix Transformer (MiT-B0…B5) as timm `pvt_v2_bN` with MiT settings (mlp_ratios 4)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from diga.models.weights import load_into, mit_to_timm_features, read_state_dict

MIT_VARIANTS = ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5")


class MiTBackbone(nn.Module):
    """4-level feature pyramid (strides 4, 8, 16, 32) of a MiT encoder.

    Args:
        variant: `mit_b0` … `mit_b5`.
        pretrained: local weight file (NVlabs `mit_bN.pth`, timm, or mmseg/DAFormer `backbone.`-prefixed).
        drop_path_rate: stochastic depth (SegFormer/DAFormer use 0.1).
    """

    def __init__(
        self, variant: str = "mit_b5", pretrained: str | Path | None = None, drop_path_rate: float = 0.1
    ) -> None:
        super().__init__()
        if variant not in MIT_VARIANTS:
            raise ValueError(f"unknown MiT variant {variant!r}; choose one of {MIT_VARIANTS}")
        self.variant = variant
        self.body = timm.create_model(
            variant.replace("mit_", "pvt_v2_"),
            pretrained=False,
            features_only=True,
            out_indices=(0, 1, 2, 3),
            mlp_ratios=(4, 4, 4, 4),  # timm's pvt_v2_b0..b4 default (8, 8, 4, 4) is PVTv2, not MiT
            drop_path_rate=drop_path_rate,
        )
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())
        if pretrained:
            self.load_pretrained(pretrained)

    def load_pretrained(self, path: str | Path) -> int:
        return load_into(self.body, mit_to_timm_features(read_state_dict(path)), path, f"{self.variant} encoder")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)
