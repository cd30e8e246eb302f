"""DeepLabV2's dilated ResNet (output stride 8) from timm, with the reference's frozen BN affine."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from diga.models.activation_checkpointing import checkpointed
from diga.models.registry import register_backbone
from diga.models.weights import load_into, read_state_dict, resnet_to_timm

RESNET_VARIANTS = ("resnet18", "resnet34", "resnet50", "resnet101")


class ResNetBackbone(nn.Module):
    """Last-stage features of a dilated ResNet (layer3 dilation 2, layer4 dilation 4 at output stride 8).

    Note: timm's ResNet puts the stride on the 3×3 conv (torchvision style); the reference's Caffe ResNet puts it
    on the first 1×1 conv. Weights have identical shapes, so both the torchvision and the DeepLab/AdaptSegNet
    ImageNet files load, but Caffe weights are then used in a torchvision-style block.
    """

    input_normalization = "imagenet"
    align_corners = True  # the reference's DeepLab up-samples with align_corners=True

    def __init__(
        self,
        variant: str = "resnet101",
        pretrained: str | Path | None = None,
        output_stride: int = 8,
        freeze_bn_affine: bool = True,
    ) -> None:
        super().__init__()
        if variant not in RESNET_VARIANTS:
            raise ValueError(f"unknown ResNet variant {variant!r}; choose one of {RESNET_VARIANTS}")
        self.variant = variant
        self.body = timm.create_model(
            variant, pretrained=False, features_only=True, output_stride=output_stride, out_indices=(4,)
        )
        self.channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())
        self.grad_checkpointing = False
        if pretrained:
            self.load_pretrained(pretrained)
        if freeze_bn_affine:  # REF: BN γ/β frozen, statistics still follow train/eval mode
            for m in self.body.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)

    def load_pretrained(self, path: str | Path) -> int:
        return load_into(self.body, resnet_to_timm(read_state_dict(path)), path, f"{self.variant} encoder")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every residual block in the backward pass (BN running statistics updated once)."""
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if not self.grad_checkpointing:
            return self.body(x)
        for name, module in self.body.items():
            if name.startswith("layer"):
                for block in module:
                    x = checkpointed(block, x)
            else:
                x = module(x)
        return [x]


def _resnet_builder(variant: str):
    def build(pretrained: str | Path | None = None, output_stride: int = 8, freeze_bn_affine: bool = True):
        return ResNetBackbone(variant, pretrained, output_stride, freeze_bn_affine)

    build.__doc__ = f"Dilated `{variant}` encoder (DeepLabV2)."
    return build


DEEPLAB_INIT = {"resnet101": "DeepLab_resnet_pretrained_init-f81d91e8.pth"}  # the file the UDA literature starts from
for _variant in RESNET_VARIANTS:
    register_backbone(_variant, weights_file=DEEPLAB_INIT.get(_variant))(_resnet_builder(_variant))
