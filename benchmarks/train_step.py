"""Training-step throughput (img/s) of each stage at the toy size, and the speed options against fp32 in one run."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from diga.tasks import run_task
from diga.utils.hydra import compose_config


class StepTimer(pl.Callback):
    """Wall time of training steps after `skip` warm-up steps."""

    def __init__(self, skip: int) -> None:
        self.skip, self.times, self.t = skip, [], 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self.t = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step > self.skip:
            self.times.append(time.perf_counter() - self.t)


def measure(stage: str, overrides: list[str], work: Path, steps: int, skip: int, batch: int) -> dict[str, float]:
    import diga.tasks.fit as fit

    timer = StepTimer(skip)
    original = fit.build_trainer

    def with_timer(cfg):
        trainer = original(cfg)
        trainer.callbacks.append(timer)
        return trainer

    fit.build_trainer = with_timer
    try:
        cfg = compose_config([
            "experiment=toy", f"stage={stage}", f"paths.root_dir={work}", f"paths.output_dir={work / stage}",
            f"trainer.max_steps={steps}", f"val_every={10 * steps}", f"ckpt_every={10 * steps}", "logger=none",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "+datamodule.val.toy_target.limit=8", *overrides,
        ])  # fmt: skip
        run_task(cfg)
    finally:
        fit.build_trainer = original
    per_step = sorted(timer.times)[len(timer.times) // 2]
    return {
        "s_per_step": per_step,
        "img_per_s": batch / per_step,
        "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def measure_pseudolabels(model: Path, work: Path, images: int) -> dict[str, float]:
    """Wall time of the pseudo-label stage (model load and data set-up excluded by timing a warm second pass)."""
    overrides = ["experiment=toy", "stage=pseudolabel", f"stage.init_from={model}", f"paths.root_dir={work}",
                 f"+datamodule.target.limit={images}", "datamodule.num_workers=0"]  # fmt: skip
    run_task(compose_config([*overrides, f"paths.output_dir={work / 'warm'}"]))
    t = time.perf_counter()
    run_task(compose_config([*overrides, f"paths.output_dir={work / 'timed'}"]))
    dt = time.perf_counter() - t
    return {"images": images, "img_per_s": images / dt,
            "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # fmt: skip
