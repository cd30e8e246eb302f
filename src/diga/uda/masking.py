"""MIC's masked image consistency (Hoyer et al. 2023): the student must predict the teacher's pseudo-label of a
target image from a copy with 70 % of its 64×64 blocks blanked out, which forces it to use context.

    L_MIC = λ · mean_pixels( w · CE(f_θ(M ⊙ x), ŷ) ),   λ = 1,

with ŷ, w the pseudo-label and its confidence weight from the unmasked image (`uda.confidence`), M the block mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from diga.losses.segmentation import cross_entropy
from diga.utils.precision import float32_math

MIC_MASK_RATIO = 0.7
MIC_MASK_BLOCK_SIZE = 64  # at MIC's full resolution (HRDA, 1024×1024 crops); MIC uses 32 for 512×512 DAFormer crops
MIC_LAMBDA = 1.0


class BlockMaskGenerator:
    """B×1×H×W float masks, 1 = keep: one U(0, 1) draw per block kept if > `mask_ratio`, nearest-upsampled.

    The block grid is `round(H / block) × round(W / block)` (Python rounding, half to even) and the upsampling is
    nearest, exactly as MIC — so for sizes that are not block multiples the blocks are not all equal. With
    `generator=None` the global torch RNG is used, like MIC; pass a seeded `torch.Generator` (on the images'
    device) for reproducible masks.
    """

    def __init__(self, mask_ratio: float = MIC_MASK_RATIO, mask_block_size: int = MIC_MASK_BLOCK_SIZE) -> None:
        self.mask_ratio, self.mask_block_size = mask_ratio, mask_block_size

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        gh, gw = round(height / self.mask_block_size), round(width / self.mask_block_size)
        if gh < 1 or gw < 1:
            raise ValueError(f"images of {height}×{width} are too small for {self.mask_block_size}-pixel mask blocks")
        return gh, gw

    @torch.no_grad()
    def generate(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None, shape: Sequence[int] | None = None
    ) -> torch.Tensor:
        """A mask for a B×C×H×W batch (or for `shape` = (B, H, W) when `imgs` only gives the device)."""
        b, h, w = (imgs.shape[0], *imgs.shape[-2:]) if shape is None else shape
        gh, gw = self.grid_size(int(h), int(w))
        grid = torch.rand((int(b), 1, gh, gw), generator=generator, device=imgs.device)
        keep = (grid > self.mask_ratio).float()
        return F.interpolate(keep, size=(int(h), int(w)), mode="nearest")

    __call__ = generate

    @torch.no_grad()
    def mask_images(
        self, imgs: torch.Tensor, generator: torch.Generator | None = None, fill: float | torch.Tensor = 0.0
    ) -> torch.Tensor:
        return mask_images(imgs, self.generate(imgs, generator), fill)


def mask_images(img: torch.Tensor, mask: torch.Tensor, fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """`mask ⊙ img + (1 − mask) ⊙ fill`; mask B×1×H×W (or B×H×W).

    MIC multiplies *normalised* images by the mask, so masked pixels become the mean colour. diga feeds the
    segmentor RGB in [0, 1] and normalises inside it: pass `fill=segmentor.normalize.mean` (the colour that
    normalises to 0) to mask exactly as MIC. `fill=0` is MIC's literal `img * mask`.
    """
    if mask.dim() == img.dim() - 1:
        mask = mask.unsqueeze(1)
    mask = mask.to(img.dtype)
    if isinstance(fill, (int, float)) and fill == 0:
        return img * mask
    fill = torch.as_tensor(fill, dtype=img.dtype, device=img.device)
    if fill.dim() == 1:
        fill = fill.view(1, -1, 1, 1)
    return img * mask + fill * (1 - mask)


@float32_math
def masked_consistency_loss(
    student_logits: torch.Tensor,
    pseudo_label: torch.Tensor,
    pseudo_weight: torch.Tensor | None = None,
    weight: float = MIC_LAMBDA,
    align_corners: bool = False,
) -> torch.Tensor:
    """λ · mean over *all* pixels of `pseudo_weight` · CE (255 ignored) — MIC's loss on the masked target images.

    Logits are bilinearly resized to the label size first (mmseg decode head, align_corners False for DAFormer).
    mmseg's CE averages over every pixel, ignored ones included, with or without a weight.
    """
    if pseudo_label.dim() == 4:
        pseudo_label = pseudo_label.squeeze(1)
    if student_logits.shape[-2:] != pseudo_label.shape[-2:]:
        student_logits = F.interpolate(
            student_logits, size=pseudo_label.shape[-2:], mode="bilinear", align_corners=align_corners
        )
    w = None if pseudo_weight is None else pseudo_weight.float()
    return weight * cross_entropy(student_logits, pseudo_label.long(), normalization="all_pixels", weight=w)


class MaskedImageConsistency:
    """MIC as one component, as DAFormer's and DiGA's self-training both use it: block-mask the colour-augmented
    target image (masked pixels = the normaliser's mean colour); the stage predicts it with the student and scores
    the prediction against the teacher's confidence-weighted pseudo-label of the unmasked image
    (`masked_consistency_loss`, or HRDA's two-resolution loss on the multi-resolution model).

    Built from the stage's `masked_consistency: {weight, mask_ratio, block_size, augment}`; `weight` 0 switches it
    off. `augment`: colour-augment the target before masking (MIC's `separatetrgaug`, its GTA5/SYNTHIA → Cityscapes
    setting); false masks the target as it is (`separate`, its Cityscapes → ACDC / Dark Zurich setting).
    """

    def __init__(self, weight: float = 0.0, mask_ratio: float = MIC_MASK_RATIO,
                 block_size: int = MIC_MASK_BLOCK_SIZE, augment: bool = True) -> None:  # fmt: skip
        self.weight = float(weight)
        self.masks = BlockMaskGenerator(float(mask_ratio), int(block_size))
        self.augment = bool(augment)

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def masked_view(self, target: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor], fill: torch.Tensor,
                    generator: torch.Generator | None) -> torch.Tensor:  # fmt: skip
        """The target, colour-augmented when `self.augment`, with its masked blocks filled with `fill`."""
        keep = self.masks(target, generator)
        return mask_images(augment(target) if self.augment else target, keep, fill=fill)
