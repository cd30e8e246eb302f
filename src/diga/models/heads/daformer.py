"""DAFormer's context-aware feature fusion head (Hoyer et al. 2022)."""

from __future__ import annotations

import torch
from torch import nn

from diga.models.heads.common import MLPEmbed, conv_bn_relu, resize_to, sep_conv_bn_relu
from diga.models.registry import register_head


@register_head("daformer")
class DAFormerHead(nn.Module):
    """MLP-embed every level to `embed_dim`, up-sample to 1/4, concat, fuse with a depthwise-separable ASPP
    (dilations 1/6/12/18, no image pooling) and a dense 3×3 conv+BN+ReLU bottleneck over the concatenated ASPP
    outputs (DAFormer's `ASPPWrapper`: 1024→256, 2.36 M weights), dropout, 1×1 classifier.

    `fusion="conv"` replaces the ASPP and the bottleneck by one 1×1 conv-BN-ReLU (DAFormer's `conv1` fusion, which
    HRDA's scale-attention head uses). `feat` is the fused `embed_dim` map (DAFormer's setting; 256-d like the
    reference's centroids), taken before the dropout unless `feat_after_dropout` (the option every head takes, so a
    head can be swapped under a model config that sets it).
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        embed_dim: int = 256,
        dilations: tuple[int, ...] = (1, 6, 12, 18),
        dropout: float = 0.1,
        feat_after_dropout: bool = False,
        fusion: str = "aspp",
    ) -> None:
        super().__init__()
        if fusion not in ("aspp", "conv"):
            raise ValueError(f"DAFormer head fusion must be 'aspp' or 'conv', got {fusion!r}")
        self.embed = nn.ModuleList(MLPEmbed(c, embed_dim) for c in in_channels)
        cat = embed_dim * len(in_channels)
        if fusion == "aspp":
            branches = (conv_bn_relu(cat, embed_dim, 1) if d == 1 else sep_conv_bn_relu(cat, embed_dim, 3, d)
                        for d in dilations)  # fmt: skip
            self.aspp = nn.ModuleList(branches)
            self.bottleneck = conv_bn_relu(embed_dim * len(dilations), embed_dim, 3)
        else:  # DAFormer's "conv1" fusion: one 1×1 conv-BN-ReLU (HRDA's scale-attention head)
            self.fuse = conv_bn_relu(cat, embed_dim, 1)
        self.fusion = fusion
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(embed_dim, num_classes, 1)
        self.feat_dim = embed_dim
        self.feat_after_dropout = feat_after_dropout

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        size = feats[0].shape[-2:]
        x = torch.cat([resize_to(m(f), size) for m, f in zip(self.embed, feats)], dim=1)
        feat = self.bottleneck(torch.cat([b(x) for b in self.aspp], dim=1)) if self.fusion == "aspp" else self.fuse(x)
        dropped = self.dropout(feat)
        return self.conv_seg(dropped), (dropped if self.feat_after_dropout else feat)
