"""Seeds derived from keys such as (seed, step, rank): one recipe for every stream that must be reproducible.

A resumed run, a DDP run and an uninterrupted single-process run draw the same numbers only if each draw's seed is
a pure function of where it happens. NumPy's SeedSequence hashes the whole key, so neighbouring keys ((0, 1) and
(1, 0), or what `seed + rank` would collide) give unrelated streams. Changing the recipe changes every seeded
number of every run (`make reproduce` compares the toy results to the digit).
"""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*key: int, high: int = 2**63 - 1) -> int:
    """An integer in [0, high) that depends on nothing but `key`."""
    return int(np.random.default_rng(list(key)).integers(high))


def step_seed(seed: int, step: int, rank: int) -> int:
    """A seed for everything random inside one training step (dropout, drop-path, photometric ops, masks)."""
    return derive_seed(seed, step, rank)


def seed_step(seed: int, step: int, rank: int) -> None:
    """Reseed torch's global RNG for this step on this rank."""
    torch.manual_seed(step_seed(seed, step, rank))


def step_generator(device: torch.device, seed: int, step: int, rank: int,
                   generator: torch.Generator | None = None) -> torch.Generator:  # fmt: skip
    """A generator on `device` (`generator` itself when it lives there) seeded for this step and rank: for draws
    that must not touch the global RNG (class and block masks), as a resumed run draws what an uninterrupted one did."""
    if generator is None or generator.device != device:
        generator = torch.Generator(device=device)
    return generator.manual_seed(step_seed(seed, step, rank))
