"""Half-class masks (CrDoMix and class-mix), vectorised over the batch.

For every image b: U_b = the label values present (255 included). K_b = floor(|U_b| / 2) values are drawn
uniformly without replacement from U_b; 255 is then added if it was not drawn. M_b = 1[y_b ∈ selected].
The reference does this with per-image Python loops and `random.sample`; here one seeded `torch.Generator`
draws random scores for the whole batch and the K_b smallest scores among present values are selected.
"""

from __future__ import annotations

import torch

from diga.utils.tensors import count_values


def present_values(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """B×(C+1) bool: which of the classes 0..C-1 (and, in the last column, 255) appear in each label map."""
    b = labels.shape[0]
    flat = _flat_value_index(labels, num_classes)
    return count_values(flat, b * (num_classes + 1)).reshape(b, num_classes + 1) > 0


def _flat_value_index(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per pixel, `b·(C+1) + value` with 255 (and anything out of range) mapped to the void column C."""
    b = labels.shape[0]
    idx = torch.where((labels >= 0) & (labels < num_classes), labels, num_classes).reshape(b, -1)
    offsets = torch.arange(b, device=labels.device).unsqueeze(1) * (num_classes + 1)
    return (idx + offsets).reshape(-1)


def select_half_classes(present: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """B×(C+1) bool selection: floor(n_present/2) present values uniformly at random, plus 255 (last column)."""
    scores = torch.rand(present.shape, generator=generator, device=present.device)
    scores = scores.masked_fill(~present, 2.0)  # absent values sort last
    ranks = scores.argsort(dim=1).argsort(dim=1)  # rank of every value among the batch row
    k = present.sum(dim=1, keepdim=True) // 2
    selected = (ranks < k) & present
    selected[:, -1] = True  # void is always kept from the foreground image
    return selected


def sample_class_masks(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """B×H×W bool mask of the pixels whose label value was selected (see module docstring)."""
    flat = _flat_value_index(labels, num_classes)
    b = labels.shape[0]
    present = count_values(flat, b * (num_classes + 1)).reshape(b, num_classes + 1) > 0
    selected = select_half_classes(present, generator)
    return selected.reshape(-1)[flat].reshape(labels.shape)
