"""SegFormer's all-MLP decoder (Xie et al. 2021), mmseg parameter names."""

from __future__ import annotations

import torch
from torch import nn

from diga.models.heads.common import MLPEmbed, conv_bn_relu, resize_to
from diga.models.registry import register_head


@register_head("segformer")
class SegFormerHead(nn.Module):
    """Embed each level to `embed_dim`, up-sample to 1/4, concat, fuse with 1×1 conv+BN+ReLU, classify.

    `feat` is the fused `embed_dim`-channel map at 1/4 resolution, before the dropout unless `feat_after_dropout`
    (the option every head takes, so a head can be swapped under a model config that sets it).
    """

    def __init__(self, in_channels: list[int], num_classes: int, embed_dim: int = 256, dropout: float = 0.1,
                 feat_after_dropout: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.linear_c = nn.ModuleList(MLPEmbed(c, embed_dim) for c in in_channels)
        self.linear_fuse = conv_bn_relu(embed_dim * len(in_channels), embed_dim, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)
        self.feat_dim = embed_dim
        self.feat_after_dropout = feat_after_dropout

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        size = feats[0].shape[-2:]
        x = torch.cat([resize_to(m(f), size) for m, f in zip(self.linear_c, feats)][::-1], dim=1)
        feat = self.linear_fuse(x)
        dropped = self.dropout(feat)
        return self.linear_pred(dropped), (dropped if self.feat_after_dropout else feat)
