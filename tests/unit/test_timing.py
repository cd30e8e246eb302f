"""The per-stage profile: a training step's time splits into forward, backward and optimiser parts that add up."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from diga.callbacks.timing import STEP_PARTS, PhaseTimer
from diga.utils.timing import STEP_PART_PREFIX, PhaseTimes, step_parts


class _Regression(pl.LightningModule):
    """Linear regression; `backward_passes` > 1 optimises manually with that many backward passes per step."""

    def __init__(self, backward_passes: int = 1) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.passes = backward_passes
        self.automatic_optimization = backward_passes == 1

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        if self.automatic_optimization:
            return torch.nn.functional.mse_loss(self.layer(x), y)
        opt = self.optimizers()
        opt.zero_grad()
        for part in x.chunk(self.passes):
            self.manual_backward(self.layer(part).square().mean())
        opt.step()
        return None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _train(module: pl.LightningModule, steps: int) -> dict[str, dict[str, float]]:
    times = PhaseTimes()
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)), batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, callbacks=[PhaseTimer(times)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, loader)
    return times.as_dict()


@pytest.mark.parametrize("backward_passes", [1, 2])
def test_a_training_step_splits_into_parts_that_add_up_to_it(backward_passes: int) -> None:
    phases = _train(_Regression(backward_passes), steps=3)
    parts = {p: phases[STEP_PART_PREFIX + p] for p in STEP_PARTS}
    assert step_parts(phases) == {p: parts[p]["seconds"] for p in STEP_PARTS}
    assert phases["training steps"]["count"] == 3
    assert parts["optimiser step"]["count"] == 3
    # one forward and one backward interval per backward pass
    assert parts["backward"]["count"] == parts["forward and losses"]["count"] == 3 * backward_passes
    total = sum(p["seconds"] for p in parts.values())
    assert total == pytest.approx(phases["training steps"]["seconds"], abs=5e-3)  # as_dict rounds to 1 ms


class FakeEvent:
    """Stands in for `torch.cuda.Event`: a mark on a simulated device timeline (milliseconds)."""

    clock_ms = 0.0
    syncs = 0

    def __init__(self, enable_timing: bool = False) -> None:
        self.at: float | None = None

    def record(self) -> None:
        FakeEvent.clock_ms += 10.0
        self.at = FakeEvent.clock_ms

    def synchronize(self) -> None:
        FakeEvent.syncs += 1

    def elapsed_time(self, end: FakeEvent) -> float:
        return end.at - self.at


def test_on_a_gpu_the_steps_are_timed_by_device_events_read_in_one_batch(monkeypatch) -> None:
    """A host clock around asynchronous GPU work measures how fast the host queued it; the device clock records
    events (no wait) and reads them once, at the end or when many are pending."""
    from diga.callbacks.timing import DeviceClock

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    times = PhaseTimes()
    clock = DeviceClock(torch.device("cuda"), flush_every=1000)
    for _ in range(50):
        start = clock.mark()
        clock.add(times, "step", start, clock.mark())
    assert FakeEvent.syncs == 0 and "step" not in times.seconds  # nothing read while training
    clock.flush(times)
    assert FakeEvent.syncs == 1
    assert times.counts["step"] == 50 and times.seconds["step"] == pytest.approx(50 * 0.010)
