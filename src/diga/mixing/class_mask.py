"""Half-class masks (METHOD.md §4.3 step 4), vectorised over the batch.

For every image b: U_b = the label values present (255 included). K_b = floor(|U_b| / 2) values are drawn
uniformly without replacement from U_b; 255 is then added if it was not drawn. M_b = 1[y_b ∈ selected].
The reference does this with per-image Python loops and `random.sample`; here one seeded `torch.Generator`
draws random scores for the whole batch and the K_b smallest scores among present values are selected.
"""

from __future__ import annotations

import torch

from diga.data.labels import IGNORE_INDEX


def present_values(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """B×(C+1) bool: which of the classes 0..C-1 (and, in the last column, 255) appear in each label map."""
    b = labels.shape[0]
    idx = torch.where(labels == IGNORE_INDEX, num_classes, labels).reshape(b, -1).clamp(0, num_classes)
    present = torch.zeros(b, num_classes + 1, dtype=torch.bool, device=labels.device)
    return present.scatter_(1, idx, True)


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
    selected = select_half_classes(present_values(labels, num_classes), generator)
    idx = torch.where(labels == IGNORE_INDEX, num_classes, labels).clamp(0, num_classes)
    return selected.gather(1, idx.reshape(labels.shape[0], -1)).reshape(labels.shape)
