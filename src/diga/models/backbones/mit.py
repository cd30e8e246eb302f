"""SegFormer's Mix Transformer (MiT-B0…B5) as timm `pvt_v2_bN` with MiT settings (mlp_ratios 4)."""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from torch import nn

from diga.models.hf_segformer import hf_encoder_to_timm, is_hf_segformer
from diga.models.registry import register_backbone
from diga.models.weights import WeightFileError, load_into, mit_to_timm_features, read_state_dict

MIT_VARIANTS = ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5")


class MiTBackbone(nn.Module):
    """4-level feature pyramid (strides 4, 8, 16, 32) of a MiT encoder.

    Args:
        variant: `mit_b0` … `mit_b5`.
        pretrained: local weight file (NVlabs `mit_bN.pth`, timm, or mmseg/DAFormer `backbone.`-prefixed).
        drop_path_rate: stochastic depth (SegFormer/DAFormer use 0.1).
        layer_norm_eps: of the block and stage LayerNorms; 1e-6 as NVlabs trained MiT, 1e-5 reproduces the
            outputs of Hugging Face `transformers` (which uses 1e-5 everywhere) to ~1e-5.
    """

    input_normalization = "imagenet"
    align_corners = False

    def __init__(
        self,
        variant: str = "mit_b5",
        pretrained: str | Path | None = None,
        drop_path_rate: float = 0.1,
        layer_norm_eps: float = 1e-6,
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
        for name, m in self.body.named_modules():  # timm builds these with 1e-6 (NVlabs); patch/sr norms keep 1e-5
            if isinstance(m, nn.LayerNorm) and re.search(r"(norm1|norm2|stages_\d+\.norm)$", name):
                m.eps = layer_norm_eps
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())
        # SegFormer's all-MLP head is 256 wide on B0/B1 and 768 wide on B2–B5
        self.default_head_width = {"segformer": 256 if variant in ("mit_b0", "mit_b1") else 768}
        if pretrained:
            self.load_pretrained(pretrained)

    def load_pretrained(self, path: str | Path) -> int:
        sd = read_state_dict(path)
        if not is_hf_segformer(sd):
            return load_into(self.body, mit_to_timm_features(sd), path, f"{self.variant} encoder")
        mapped = hf_encoder_to_timm(sd, path)
        extra = sorted(set(mapped) - set(self.body.state_dict()))
        if extra:  # e.g. a deeper MiT's blocks: load_into would ignore them
            raise WeightFileError(f"{path}: {len(extra)} encoder tensors of the file have no place in {self.variant} "
                                  f"(another MiT size?), e.g. {extra[:3]}")  # fmt: skip
        return load_into(self.body, mapped, path, f"{self.variant} encoder")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer block in the backward pass (timm's checkpoint_seq)."""
        self.body.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


def _mit_builder(variant: str):
    def build(pretrained: str | Path | None = None, drop_path_rate: float = 0.1,
              layer_norm_eps: float = 1e-6) -> MiTBackbone:  # fmt: skip
        return MiTBackbone(variant, pretrained=pretrained, drop_path_rate=drop_path_rate, layer_norm_eps=layer_norm_eps)

    build.__doc__ = f"MiT encoder `{variant}` (SegFormer)."
    return build


for _variant in MIT_VARIANTS:
    register_backbone(_variant, weights_file=f"{_variant}.pth")(_mit_builder(_variant))  # NVlabs' names
