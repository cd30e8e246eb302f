"""Training order as a pure function of (seed, global step): resumable mid-epoch, identical after a SIGKILL.

The reference iterates one long shuffled list for the whole run (no epochs). `StepSampler` does the same: sample
position p (counted over the whole run, all ranks together) is image `perm_e[p mod n]` with `perm_e` the seeded
permutation of pass e = p div n, and carries its own augmentation seed derived from (seed, p). A new iterator —
after a restart — starts at the position of the current global step, so a resumed run sees exactly the images and
augmentations the uninterrupted run would have seen. Under DDP Lightning hands every rank each W-th item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class StepSampler(Sampler[tuple[int, int]]):
    """Yields `(index, augmentation_seed)` from position `start_step() · batch_size · world_size` on."""

    def __init__(self, num_samples: int, batch_size: int, total_steps: int, seed: int,
                 start_step: Callable[[], int] = lambda: 0) -> None:  # fmt: skip
        self.n, self.batch_size, self.total_steps, self.seed = num_samples, batch_size, total_steps, seed
        self.start_step = start_step

    def _bounds(self) -> tuple[int, int]:
        per_step = self.batch_size * _world_size()
        return self.start_step() * per_step, self.total_steps * per_step

    def __len__(self) -> int:
        start, end = self._bounds()
        return max(end - start, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, end = self._bounds()
        perms: dict[int, np.ndarray] = {}
        for p in range(start, end):
            e = p // self.n
            if e not in perms:
                perms = {e: np.random.default_rng([self.seed, e]).permutation(self.n)}
            yield int(perms[e][p % self.n]), int(np.random.default_rng([self.seed, e, p]).integers(2**31))


def step_seed(seed: int, step: int, rank: int) -> int:
    """A seed for everything random inside one training step (dropout, drop-path, photometric ops, masks)."""
    return int(np.random.default_rng([seed, step, rank]).integers(2**63 - 1))


def seed_step(seed: int, step: int, rank: int) -> None:
    torch.manual_seed(step_seed(seed, step, rank))
