"""The seed recipe is pinned: a change would silently change every seeded number of every run."""

from __future__ import annotations

import torch

from diga.utils.rng import derive_seed, step_generator, step_seed


def test_seeds_are_pinned_and_keys_do_not_collide() -> None:
    assert step_seed(0, 0, 0) == 5874934615388537134
    assert step_seed(3, 100, 1) == 4337585281173768039
    assert derive_seed(1, 0, 5, high=2**31) == 272115904  # a StepSampler augmentation seed
    assert step_seed(0, 1, 0) != step_seed(1, 0, 0) != step_seed(0, 0, 1)  # unlike seed + step + rank


def test_step_generator_is_reused_on_its_device_and_reseeded() -> None:
    cpu = torch.device("cpu")
    g = step_generator(cpu, 0, 5, 0)
    first = torch.rand(4, generator=g)
    assert step_generator(cpu, 0, 5, 0, g) is g and torch.equal(torch.rand(4, generator=g), first)
    assert not torch.equal(torch.rand(4, generator=step_generator(cpu, 0, 6, 0, g)), first)
