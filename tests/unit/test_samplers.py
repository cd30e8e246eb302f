"""StepSampler: order as a function of (seed, global step); DDP ranks split each global batch."""

from __future__ import annotations

import pytest
from torch.utils.data import DistributedSampler

from diga.data import samplers
from diga.data.samplers import StepSampler


def _batches(s: StepSampler, batch: int) -> list[list[tuple[int, int]]]:
    items = list(s)
    return [items[i : i + batch] for i in range(0, len(items), batch)]


def test_resume_starts_at_the_current_step() -> None:
    full = list(StepSampler(10, 4, total_steps=6, seed=1))
    assert len(full) == 24 and sorted({i for i, _ in full[:10]}) == list(range(10))  # a permutation per pass
    resumed = list(StepSampler(10, 4, total_steps=6, seed=1, start_step=lambda: 4))
    assert resumed == full[16:]


def test_two_ranks_see_the_single_process_global_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    single = _batches(StepSampler(10, 4, total_steps=5, seed=2), 4)
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(samplers, "rank_and_world", lambda r=rank: (r, 2))
        per_rank.append(_batches(StepSampler(10, 2, total_steps=5, seed=2), 2))
    assert len(per_rank[0]) == len(per_rank[1]) == 5
    for step in range(5):  # same images *and* augmentation seeds in every global step
        assert sorted(per_rank[0][step] + per_rank[1][step]) == sorted(single[step])
    assert not set(per_rank[0][0]) & set(per_rank[1][0])


def test_lightning_does_not_wrap_it() -> None:
    """Lightning re-wraps (and shuffles) any training sampler that is not a DistributedSampler."""
    assert isinstance(StepSampler(4, 2, 2, 0), DistributedSampler)


def test_shard_sampler_scores_every_image_once_over_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's sampler would pad 5 images on 2 ranks to 6 (one image twice); the shards cover each once."""
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(samplers, "rank_and_world", lambda r=rank: (r, 2))
        s = samplers.ShardSampler(5)
        assert isinstance(s, DistributedSampler)  # kept as it is by Lightning (no padding wrapper)
        shards.append(list(s))
        assert len(s) == len(shards[-1])
    assert sorted(shards[0] + shards[1]) == [0, 1, 2, 3, 4]
    monkeypatch.setattr(samplers, "rank_and_world", lambda: (0, 1))
    assert list(samplers.ShardSampler(5)) == [0, 1, 2, 3, 4]  # one process: the plain order
