"""`benchmarks.isolate`: a measurement that outgrows its memory cap is stopped and reported, not OOM-killed."""

from __future__ import annotations

import pytest
from benchmarks.isolate import MeasurementFailed, MemoryCapReached, isolated


def _hold(gb: float) -> dict[str, float]:
    """Grow by 64 MB blocks, as a training step's activations do (torch releases the GIL while it fills them)."""
    import torch

    blocks = [torch.ones(2**24) for _ in range(int(gb * 16))]  # every page written, so resident
    return {"held_gb": sum(b.numel() * 4 for b in blocks) / 2**30}


def _raise() -> dict[str, float]:
    raise ValueError("bad row")


def test_a_measurement_under_its_cap_returns_its_peak() -> None:
    row = isolated(_hold, 0.25, rss_cap_gb=8.0)
    assert row["held_gb"] == 0.25 and row["peak_rss_gb"] >= row["rss_before_gb"] + 0.2


def test_a_measurement_over_its_cap_is_stopped_and_says_how_far_it_got() -> None:
    with pytest.raises(MemoryCapReached, match=r"stopped at 0\.\d\d GB resident .*limits: 0\.5 GB resident") as caught:
        isolated(_hold, 2.0, rss_cap_gb=0.5)
    assert 0.5 < caught.value.reached_gb < 2.0  # stopped on the way up, not after the whole block


def test_a_machine_short_of_memory_stops_the_measurement() -> None:
    """The floor on available memory (which also sees data-loader workers): here above what the machine has."""
    with pytest.raises(MemoryCapReached, match="GB left available"):
        isolated(_hold, 0.25, min_available_gb=1e6)


def test_any_other_failure_is_not_mistaken_for_the_cap() -> None:
    with pytest.raises(MeasurementFailed, match="bad row") as caught:
        isolated(_raise, rss_cap_gb=8.0)
    assert not isinstance(caught.value, MemoryCapReached)
