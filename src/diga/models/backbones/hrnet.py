"""HRNetV2-W48 encoder of DiGA's semi-supervised model, built on timm's `hrnet_w48`.

timm's HRNet is the *classification* HRNet: inside every multi-resolution module the coarser branches are
up-sampled with `nn.Upsample(scale_factor=2**k, mode="nearest")`. The reference (`SEMI/model/networks/hrnet_module.py`,
the HRNet-Semantic-Segmentation code) resizes them bilinearly *to the finer branch's size* with
`align_corners=True` (`config_default.yaml`). We keep timm's modules and parameter names (so timm and official
ImageNet files load as they are) but run the module fusion ourselves, which gives the reference's numbers and also
works for input sizes that are not multiples of 32 (where the scale-factor version cannot add the branches).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from diga.models.activation_checkpointing import frozen_batchnorm_statistics
from diga.models.registry import register_backbone
from diga.models.weights import WeightFileError, load_into, read_state_dict

# Top-level module names of timm's features model (= the official HRNet-Image-Classification names).
_TIMM_PARTS = (
    "conv1",
    "bn1",
    "conv2",
    "bn2",
    "layer1",
    "transition1",
    "stage2",
    "transition2",
    "stage3",
    "transition3",
    "stage4",
)
# The classification head of the official / timm ImageNet files; not part of the encoder.
_CLS_HEAD_PARTS = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
# The reference's names (hrnet_module.py) for the parts that timm names differently; everything below these
# prefixes (branches, fuse_layers, block conv/bn/downsample names) is identical in both.
AUTHORS_TO_TIMM = {
    "stage1": "layer1",
    "transition_stage_1_2": "transition1",
    "transition_stage_2_3": "transition2",
    "transition_stage_3_4": "transition3",
}
TIMM_TO_AUTHORS = {v: k for k, v in AUTHORS_TO_TIMM.items()}
_AUTHORS_SEGMODEL_PREFIX = "hrnet."  # reference `SegModel` checkpoints: `hrnet.*` (encoder) + `ocrnet.*` (head)


def hrnet_to_timm(sd: Mapping[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    """Any supported HRNet layout → timm's features-model names; every key must be accounted for.

    Layouts: timm `hrnet_w*` and the official ImageNet files (`hrnetv2_w48_imagenet_pretrained.pth`, same names
    plus a classification head, which is dropped); the reference's `HRNet` names (`stage1`, `transition_stage_1_2`,
    …); the reference's whole `SegModel` (`hrnet.` + `ocrnet.` prefixes, the head part dropped).
    Anything else in the file is an error rather than silently ignored.
    """
    if any(k.startswith(_AUTHORS_SEGMODEL_PREFIX) for k in sd):
        stray = [k for k in sd if not k.startswith((_AUTHORS_SEGMODEL_PREFIX, "ocrnet."))]
        if stray:
            raise WeightFileError(f"{path}: reference SegModel file with unexpected keys, e.g. {stray[:3]}")
        sd = {k[len(_AUTHORS_SEGMODEL_PREFIX) :]: v for k, v in sd.items() if k.startswith(_AUTHORS_SEGMODEL_PREFIX)}
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, value in sd.items():
        part, _, rest = key.partition(".")
        part = AUTHORS_TO_TIMM.get(part, part)
        if part in _CLS_HEAD_PARTS:
            continue
        if part not in _TIMM_PARTS or not rest:
            unexpected.append(key)
            continue
        new = f"{part}.{rest}"
        if new in out:  # e.g. both `stage1.*` and `layer1.*` in one file
            raise WeightFileError(f"{path}: two tensors map to the HRNet key {new!r} (mixed naming schemes)")
        out[new] = value
    if unexpected:
        raise WeightFileError(f"{path}: {len(unexpected)} keys are not HRNet encoder keys, e.g. {unexpected[:3]}")
    return out


def timm_to_authors(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm names → the reference's `HRNet` names (for exporting, and for the round-trip tests)."""
    out = {}
    for key, value in sd.items():
        part, _, rest = key.partition(".")
        assert part in _TIMM_PARTS, f"not a timm HRNet encoder key: {key!r}"
        out[f"{TIMM_TO_AUTHORS.get(part, part)}.{rest}"] = value
    return out


class HRNetBackbone(nn.Module):
    """HRNetV2: the four branch outputs of the last stage, up-sampled to 1/4 and concatenated (one 720-d map).

    Args:
        variant: timm HRNet name (`hrnet_w48` for DiGA; the other widths build the same way).
        pretrained: local weight file (timm, official ImageNet `hrnetv2_w48_imagenet_pretrained.pth`, or the
            reference's `HRNet` / `SegModel` names).
        align_corners: bilinear up-sampling in the fusion and the final concat (REF: True).
        fuse_upsample: `bilinear` (REF, HRNet segmentation code) or `nearest` (timm / classification HRNet).

    `self.body` is timm's module tree with the fusion's `nn.Upsample` layers removed: call this module, not
    `self.body(x)` (timm's own forward would no longer add the branches).
    """

    # REF feeds (RGB·255 − Caffe mean) / 128 in RGB order (SEMI/train_DiGA_semiseg_warm_up.py:238, CityLoader)
    input_normalization = "caffe_rgb"
    align_corners = True  # REF: config_default.yaml ALIGN_CORNERS, and every logit up-sampling in SEMI/

    def __init__(
        self,
        variant: str = "hrnet_w48",
        pretrained: str | Path | None = None,
        align_corners: bool = True,
        fuse_upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if fuse_upsample not in ("bilinear", "nearest"):
            raise ValueError(f"fuse_upsample must be 'bilinear' or 'nearest', not {fuse_upsample!r}")
        self.variant = variant
        # feature_location="" → the raw branch outputs (48/96/192/384), not the classification "incre" features
        self.body = timm.create_model(
            variant, pretrained=False, features_only=True, feature_location="", out_indices=(1, 2, 3, 4)
        )
        for stage in (self.body.stage2, self.body.stage3, self.body.stage4):
            for module in stage:
                for fuse_row in module.fuse_layers:
                    for f in fuse_row:
                        if isinstance(f, nn.Sequential) and isinstance(f[-1], nn.Upsample):
                            del f[-1]  # parameter-free; we up-sample to the target size in `_fuse`
        self.align_corners = align_corners
        self.fuse_upsample = fuse_upsample
        self.grad_checkpointing = False
        self.branch_channels: list[int] = list(self.body.feature_info.channels())
        self.channels: list[int] = [sum(self.branch_channels)]
        self.strides: list[int] = [self.body.feature_info.reduction()[0]]
        if pretrained:
            self.load_pretrained(pretrained)

    def load_pretrained(self, path: str | Path) -> int:
        return load_into(self.body, hrnet_to_timm(read_state_dict(path), path), path, f"{self.variant} encoder")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute layer1 and every multi-resolution module in backward. timm's HRNet refuses
        `set_grad_checkpointing(True)`, so this uses torch.utils.checkpoint (non-reentrant) directly."""
        self.grad_checkpointing = enable

    def _resize(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.fuse_upsample == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def _fuse(self, module: nn.Module, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One timm `HighResolutionModule`: branches, then the exchange unit with size-based up-sampling."""
        xs = tuple(branch(x) for branch, x in zip(module.branches, xs))
        if module.num_branches == 1:
            return xs
        out = []
        for i, fuse_row in enumerate(module.fuse_layers):
            y = None
            for j, f in enumerate(fuse_row):  # same summation order as the reference (j = 0, 1, …)
                z = f(xs[j])
                if j > i:
                    z = self._resize(z, xs[i].shape[-2:])
                y = z if y is None else y + z
            out.append(module.fuse_act(y))
        return tuple(out)

    def _run(
        self, fn: Callable[..., tuple[torch.Tensor, ...]], module: nn.Module, *xs: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint(
                fn,
                module,
                *xs,
                use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), frozen_batchnorm_statistics(module)),
            )
        return fn(module, *xs)

    @staticmethod
    def _transition(transition: nn.ModuleList, xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        # existing branches go through their own transition (Identity for HRNetV2), new ones start from the last
        return tuple(t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b = self.body
        x = b.act1(b.bn1(b.conv1(x)))
        x = b.act2(b.bn2(b.conv2(x)))
        (x,) = self._run(lambda m, t: (m(t),), b.layer1, x)
        xs = tuple(t(x) for t in b.transition1)
        for transition, stage in ((None, b.stage2), (b.transition2, b.stage3), (b.transition3, b.stage4)):
            if transition is not None:
                xs = self._transition(transition, xs)
            for module in stage:
                xs = self._run(self._fuse, module, *xs)
        size = xs[0].shape[-2:]
        ups = [xs[0], *(F.interpolate(t, size=size, mode="bilinear", align_corners=self.align_corners) for t in xs[1:])]
        return [torch.cat(ups, dim=1)]


@register_backbone("hrnet_w48", weights_file="hrnetv2_w48_imagenet_pretrained.pth")
def hrnet_w48(**kwargs: Any) -> HRNetBackbone:
    """HRNetV2-W48 (720-d at stride 4), DiGA's semi-supervised encoder."""
    return HRNetBackbone("hrnet_w48", **kwargs)


@register_backbone("hrnet_w18_small")
def hrnet_w18_small(**kwargs: Any) -> HRNetBackbone:
    """HRNetV2-W18-small (240-d at stride 4, 1.5 M parameters): W48's code at a twelfth of its time, for CPU trials."""
    return HRNetBackbone("hrnet_w18_small", **kwargs)
