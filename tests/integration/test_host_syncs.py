"""A budget of host reads per training step for every stage: on a GPU each one makes the host wait for the device.

The steps run on the CPU, where nothing waits; what is counted is the Python-level reads that would synchronise on a
GPU (`diga.utils.host_syncs`), from the start of a step's hooks to the end of its callbacks, inside a real run
(`run_task`, with the configured callbacks and logger). `make gpu-smoke` reports the synchronisations CUDA itself
sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl

import diga.tasks.fit as fit
from diga.tasks import run_task
from diga.utils.host_syncs import HOST_SAMPLED, HostSyncCounter
from tests.helpers import TRAINING_STAGES, compose_cfg, tiny_toy_overrides, training_stage_overrides

# Per step, the non-finite-loss guard reads one flag before each optimiser step (the translator has two). On a step
# whose values the logger writes, Lightning's learning-rate monitor reads the progress-bar loss once more, and
# self-training reads its per-class pseudo-label statistics in one transfer.
OPTIMISER_STEPS = {"translator": 2}
# HOST_SAMPLED: kornia reads the photometric augmentation's random parameters, drawn on the host;
# tests/unit/test_device_placement.py shows it reads nothing on the images' device
LOGGED_DIAGNOSTICS = {"selftrain": 1}


def budget(stage: str, logged: bool) -> int:
    return OPTIMISER_STEPS.get(stage, 1) + (1 + LOGGED_DIAGNOSTICS.get(stage, 0) if logged else 0)


class _Open(pl.Callback):
    def __init__(self, steps: list[HostSyncCounter]) -> None:
        self.steps = steps

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.steps.append(HostSyncCounter(ignore=HOST_SAMPLED).__enter__())


class _Close(pl.Callback):
    def __init__(self, steps: list[HostSyncCounter]) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.steps[-1].__exit__(None, None, None)


def count_step_reads(cfg: Any, monkeypatch: pytest.MonkeyPatch) -> list[HostSyncCounter]:
    """One counter per training step of a real run of `cfg`."""
    steps: list[HostSyncCounter] = []
    original = fit.build_trainer

    def counting(c: Any) -> pl.Trainer:
        trainer = original(c)
        trainer.callbacks.insert(0, _Open(steps))  # before every other hook of the step …
        trainer.callbacks.append(_Close(steps))  # … and after them (checkpointing is off here)
        return trainer

    monkeypatch.setattr(fit, "build_trainer", counting)
    run_task(cfg)
    return steps


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_host_reads_per_training_step_stay_within_budget(stage: str, tmp_path: Path, toy_root: Path,
                                                        selftrain_inputs: tuple[Path, Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=2), *training_stage_overrides(stage,
                       selftrain_inputs), "trainer.log_every_n_steps=2", "ckpt_every=100",
                       "log_images_every=0", "val_every=100"])  # fmt: skip
    steps = count_step_reads(cfg, monkeypatch)
    assert len(steps) == 2
    assert steps[0].calls <= budget(stage, logged=False), f"{stage}, step 0: {steps[0].report()}"
    assert steps[1].calls <= budget(stage, logged=True), f"{stage}, step 1 (logged): {steps[1].report()}"


class _CompareLoggingSteps(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.seen.append((pl_module.logs_this_step(), trainer._logger_connector.should_update_logs))


def test_logging_steps_are_the_ones_lightning_writes(tmp_path: Path, toy_root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Diagnostics computed only on `logs_this_step()` reach the logger: it agrees with Lightning's own rule."""
    compare = _CompareLoggingSteps()
    original = fit.build_trainer
    monkeypatch.setattr(fit, "build_trainer", lambda c: _with(original(c), compare))
    run_task(compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=5), "stage=source_only",
                          "trainer.log_every_n_steps=2", "logger=none"]))  # fmt: skip
    assert [mine for mine, _ in compare.seen] == [False, True, False, True, False]
    assert all(mine == lightning for mine, lightning in compare.seen), compare.seen


def _with(trainer: pl.Trainer, callback: pl.Callback) -> pl.Trainer:
    trainer.callbacks.append(callback)
    return trainer
