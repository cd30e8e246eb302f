"""Training order as a pure function of (seed, global step): resumable mid-epoch, identical after a SIGKILL.

The reference iterates one long shuffled list for the whole run (no epochs). `StepSampler` does the same: sample
position p (counted over the whole run, all ranks together) is image `perm_e[p mod n]` with `perm_e` the seeded
permutation of pass e = p div n, and carries its own augmentation seed derived from (seed, p). A new iterator —
after a restart — starts at the position of the current global step, so a resumed run sees exactly the images and
augmentations the uninterrupted run would have seen. Under DDP rank r takes the positions p ≡ r (mod W) itself:
the global batch of step k is positions [k·B·W, (k+1)·B·W) — the batch one process with batch B·W would see,
with the same per-image augmentation — so DDP and single-process runs with the same global batch see the same
data. It subclasses `DistributedSampler` only so that Lightning does not wrap it in a shuffling
`DistributedSamplerWrapper` (which would mix steps and materialise the whole run's order up front).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import DistributedSampler

from diga.utils.distributed import rank_and_world
from diga.utils.rng import derive_seed


class StepSampler(DistributedSampler):
    """Yields this rank's `(index, augmentation_seed)` from global step `start_step()` on."""

    def __init__(self, num_samples: int, batch_size: int, total_steps: int, seed: int,
                 start_step: Callable[[], int] = lambda: 0) -> None:  # fmt: skip
        # DistributedSampler.__init__ is not called: rank and world size are read when iterating (after DDP set-up)
        self.n, self.batch_size, self.total_steps, self.seed = num_samples, batch_size, total_steps, seed
        self.start_step = start_step

    def set_epoch(self, epoch: int) -> None:
        """Order depends on the global step only (Lightning calls this at every epoch start)."""

    def _positions(self) -> range:
        rank, world = rank_and_world()
        per_step = self.batch_size * world
        return range(self.start_step() * per_step + rank, self.total_steps * per_step, world)

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perms: dict[int, np.ndarray] = {}
        for p in self._positions():
            e = p // self.n
            if e not in perms:
                perms = {e: np.random.default_rng([self.seed, e]).permutation(self.n)}
            yield int(perms[e][p % self.n]), derive_seed(self.seed, e, p, high=2**31)


class ShardSampler(DistributedSampler):
    """Evaluation under DDP: rank r takes items r, r + W, r + 2W, … — every item on exactly one rank, none repeated.

    Lightning's own `DistributedSampler` pads each rank to the same length with repeated items, so 500 Cityscapes
    val images on 8 GPUs would score 4 of them twice. Ranks may then run one batch more or less than each other;
    validation has no collective per batch (the confusion matrices are summed once, at the end).
    """

    def __init__(self, num_samples: int) -> None:  # rank and world size are read when iterating (after DDP set-up)
        self.n = num_samples

    def set_epoch(self, epoch: int) -> None:
        """The order is fixed (Lightning calls this at every epoch start)."""

    def __iter__(self) -> Iterator[int]:
        rank, world = rank_and_world()
        return iter(range(rank, self.n, world))

    def __len__(self) -> int:
        rank, world = rank_and_world()
        return len(range(rank, self.n, world))
