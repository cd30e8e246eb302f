"""OCR (object-contextual representations) head of DiGA's semi-supervised HRNet model.

Layer for layer the reference's `OCRNet` (`SEMI/model/networks/ocrnet_module.py`): which convs carry a bias, where
BN/ReLU sit and the dropout rate all match, so the same weights give the same outputs (`ocr_authors_to_diga`
renames a reference state dict).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from diga.models.registry import register_head


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@register_head("ocr")
class OCRHead(nn.Module):
    """Soft object regions (aux logits) → pixel representations → class-region features (spatial softmax) →
    pixel-region attention (query/key/value, BN+ReLU, `key_channels`) → context ⊕ pixel → 512-d `feat` →
    Dropout2d(0.05) → 1×1 classifier. Returns `(logits, feat, aux_logits)`, all at the encoder's stride.

    In the reference `feat` is taken *after* the dropout (it sits in the same `nn.Sequential`), which matters
    because the reference teacher runs in train mode; `feat_after_dropout=True` reproduces that, the default
    (False) gives the un-dropped feature. Init as the reference: PyTorch's default conv init, BN γ=1, β=0.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        embed_dim: int = 512,
        key_channels: int = 256,
        dropout: float = 0.05,
        feat_after_dropout: bool = False,
    ) -> None:
        super().__init__()
        cin = in_channels[-1]
        self.aux_head = nn.Sequential(  # REF `soft_object_regions`: both 1×1 convs have a bias
            nn.Conv2d(cin, cin, 1, bias=True),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, num_classes, 1, bias=True),
        )
        self.pixel = nn.Sequential(  # REF `pixel_representations`: 3×3 conv *with* bias
            nn.Conv2d(cin, embed_dim, 3, padding=1, bias=True), nn.BatchNorm2d(embed_dim), nn.ReLU(inplace=True)
        )
        # query (pixels) and key (class regions): two [1×1 conv, BN, ReLU] each, one flat Sequential as the REF
        self.query = nn.Sequential(*_conv_bn_relu(embed_dim, key_channels), *_conv_bn_relu(key_channels, key_channels))
        self.key = nn.Sequential(*_conv_bn_relu(embed_dim, key_channels), *_conv_bn_relu(key_channels, key_channels))
        self.value = _conv_bn_relu(embed_dim, key_channels)
        self.context = _conv_bn_relu(key_channels, embed_dim)
        self.bottleneck = _conv_bn_relu(2 * embed_dim, embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1, bias=True)
        self.key_channels = key_channels
        self.feat_dim = embed_dim
        self.feat_after_dropout = feat_after_dropout

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = feats[-1]
        aux = self.aux_head(x)  # B×K×h×w
        pix = self.pixel(x)  # B×D×h×w
        b, _, h, w = pix.shape
        # class-region features: each class's spatial softmax over the aux logits pools the pixel features
        regions = torch.matmul(aux.flatten(2).softmax(dim=2), pix.flatten(2).transpose(1, 2))  # B×K×D
        regions = regions.transpose(1, 2).unsqueeze(3)  # B×D×K×1: 1×1 convs + BN run over the K "positions"
        query = self.query(pix).flatten(2).transpose(1, 2)  # B×hw×Dk
        key = self.key(regions).flatten(2)  # B×Dk×K
        attn = (self.key_channels**-0.5 * torch.matmul(query, key)).softmax(dim=-1)  # B×hw×K
        value = self.value(regions).flatten(2).transpose(1, 2)  # B×K×Dk
        ctx = torch.matmul(attn, value).transpose(1, 2).reshape(b, self.key_channels, h, w)
        feat = self.bottleneck(torch.cat([self.context(ctx), pix], dim=1))
        dropped = self.dropout(feat)
        return self.classifier(dropped), (dropped if self.feat_after_dropout else feat), aux


# diga name → reference `OCRNet` name, per sub-module (tensor names below these prefixes are identical)
OCR_DIGA_TO_AUTHORS = {
    "aux_head": "soft_object_regions",
    "pixel": "pixel_representations",
    "query": "pixel_region_relations.pixel_rep",
    "key": "pixel_region_relations.obj_reg_rep",
    "value": "value",
    "context": "ocr_up",
    "bottleneck": "augmented_rep",
    "classifier": "segmentation_classes.0",
}


def ocr_authors_to_diga(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference `OCRNet` state dict (or a `SegModel` one, `ocrnet.` prefix) → `OCRHead` names.

    Strict both ways: a key with no counterpart raises `KeyError`, so a renamed or extra layer cannot slip by.
    """
    if any(k.startswith("ocrnet.") for k in sd):
        sd = {k[len("ocrnet.") :]: v for k, v in sd.items() if k.startswith("ocrnet.")}
    # longest reference prefix first: `pixel_region_relations.pixel_rep` before anything shorter
    table = sorted(((a, d) for d, a in OCR_DIGA_TO_AUTHORS.items()), key=lambda t: -len(t[0]))
    out = {}
    for key, value in sd.items():
        for authors, diga in table:
            if key.startswith(authors + "."):
                out[diga + key[len(authors) :]] = value
                break
        else:
            raise KeyError(f"reference OCR key {key!r} has no OCRHead counterpart")
    return out
