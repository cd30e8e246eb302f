"""Training-step throughput (img/s) of each stage, and the inputs self-training needs (pseudo-labels, centroids)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from diga.config import compose_config
from diga.tasks import run_task


class StepTimer(pl.Callback):
    """Wall time of training steps after `skip` warm-up steps."""

    def __init__(self, skip: int) -> None:
        self.skip, self.times, self.t = skip, [], 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self.t = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step > self.skip:
            self.times.append(time.perf_counter() - self.t)


def _common(stage: str, work: Path, steps: int) -> list[str]:
    return [f"stage={stage}", f"paths.root_dir={work}", f"paths.output_dir={work / stage}",
            f"trainer.max_steps={steps}", f"val_every={10 * steps}", f"ckpt_every={10 * steps}", "logger=none",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]  # fmt: skip


def measure(stage: str, overrides: list[str], work: Path, steps: int, skip: int, batch: int) -> dict[str, float]:
    """Median step time of `stage` after `skip` steps; `batch` = images per domain per step."""
    import diga.tasks.fit as fit

    timer = StepTimer(skip)
    original = fit.build_trainer

    def with_timer(cfg):
        trainer = original(cfg)
        trainer.callbacks.append(timer)
        return trainer

    fit.build_trainer = with_timer
    try:
        run_task(compose_config([*_common(stage, work, steps), *overrides]))
    finally:
        fit.build_trainer = original
    per_step = sorted(timer.times)[len(timer.times) // 2]
    return {"s_per_step": per_step, "img_per_s": batch / per_step, "steps_timed": len(timer.times)}


def selftrain_inputs(model: Path, work: Path, case: list[str]) -> list[str]:
    """Pseudo-labels and centroids from `model` (not timed); the overrides that point self-training at them."""
    common = [*case, f"stage.init_from={model}", f"paths.root_dir={work}", "datamodule.num_workers=0"]
    run_task(compose_config([*common, "stage=pseudolabel", f"paths.output_dir={work / 'inputs'}"]))
    run_task(compose_config([*common, "stage=centroids", f"paths.output_dir={work / 'inputs'}"]))
    inputs = work / "inputs"
    return [f"stage.pseudo_labels={inputs / 'pseudo_labels'}", f"stage.centroids={inputs / 'centroids.pt'}",
            f"stage.init_from={model}"]  # fmt: skip
