"""DeepLabV2 head as used by DiGA/ProDA (`Classifier_Module2`)."""

from __future__ import annotations

import torch
from torch import nn

from diga.models.registry import register_head


@register_head("deeplabv2")
class DeepLabV2Head(nn.Module):
    """5 parallel branches (1×1 and 3×3 dilated 6/12/18/24, each conv+GN(32)+ReLU) → concat → SE →
    3×3 conv + GN (no ReLU) = 256-d `feat` → Dropout2d(0.1) → 1×1 conv (no bias) → logits.

    In the reference `feat` is taken *after* the dropout; `feat_after_dropout` keeps that option.
    Init follows the reference's effective init: all convs N(0, 0.01).
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        embed_dim: int = 256,
        dilations: tuple[int, ...] = (6, 12, 18, 24),
        dropout: float = 0.1,
        feat_after_dropout: bool = False,
    ) -> None:
        super().__init__()
        cin = in_channels[-1]

        def branch(k: int, d: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, embed_dim, k, padding=d if k == 3 else 0, dilation=d, bias=True),
                nn.GroupNorm(32, embed_dim),
                nn.ReLU(inplace=True),
            )

        self.branches = nn.ModuleList([branch(1, 1), *[branch(3, d) for d in dilations]])
        cat = embed_dim * (len(dilations) + 1)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(cat, cat // 16),
            nn.ReLU(inplace=True),
            nn.Linear(cat // 16, cat),
            nn.Sigmoid(),
        )
        self.bottleneck = nn.Sequential(nn.Conv2d(cat, embed_dim, 3, padding=1, bias=True), nn.GroupNorm(32, embed_dim))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1, bias=False)
        self.feat_dim = embed_dim
        self.feat_after_dropout = feat_after_dropout
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.01)
        nn.init.zeros_(self.bottleneck[0].bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([b(feats[-1]) for b in self.branches], dim=1)
        x = x * self.se(x)[:, :, None, None]
        feat = self.bottleneck(x)
        dropped = self.dropout(feat)
        return self.classifier(dropped), (dropped if self.feat_after_dropout else feat)
