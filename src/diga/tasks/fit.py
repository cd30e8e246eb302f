"""Train one stage with Lightning, export what it hands on, evaluate it on every validation set."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.utilities.exceptions import SIGTERMException

from diga.callbacks.console import console_callbacks, model_summary_line, quiet_third_party
from diga.callbacks.preemption import CheckpointOnSigterm, StageInterrupted
from diga.callbacks.timing import PhaseTimer
from diga.data.labels import get_label_set
from diga.evaluation.metrics import format_table, with_set_means
from diga.loggers import resume_loggers
from diga.modules.contract import check_stage_class
from diga.tasks.memory_fit import with_overrides
from diga.tasks.results import write_results
from diga.tasks.resume import resume_point
from diga.tasks.selection import apply_selection, restore_selected
from diga.utils.artifacts import LAST_CHECKPOINT, TIMINGS
from diga.utils.atomic_checkpoints import AtomicCheckpointIO
from diga.utils.hydra import to_plain
from diga.utils.memory import MemoryEstimate, without_side_effects
from diga.utils.timing import PhaseTimes

log = logging.getLogger(__name__)


StageModule = pl.LightningModule  # every stage's module: a LightningModule implementing diga.modules.contract


def build_module(cfg: DictConfig) -> StageModule:
    """The stage's LightningModule: its whole constructor is `stage.module` (plain containers in the hparams, so
    checkpoints load with torch's weights_only=True); it implements the stage contract (`diga.modules.contract`)."""
    check_stage_class(get_class(str(cfg.stage.module._target_)))
    return instantiate(cfg.stage.module, _recursive_=False, _convert_="all")


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not loggers:  # Lightning refuses a LearningRateMonitor without a logger (`logger=none`)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    callbacks.append(CheckpointOnSigterm(cfg.paths.ckpt_dir))  # SIGTERM: a checkpoint, then a non-zero exit
    plugins: list[Any] = [AtomicCheckpointIO()]
    if os.environ.get("SLURM_JOB_ID") and any(k.startswith("SUBMITIT_") for k in os.environ):
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))  # submitit requeues; one mechanism, not two
    extra: dict[str, Any] = {}
    strategy = cfg.trainer.get("strategy", "auto")
    if cfg.trainer.get("sync_batchnorm") and cfg.trainer.get("accelerator") == "cpu":
        from diga.models.sync_batchnorm import AllReduceSyncBatchNorm

        extra["sync_batchnorm"] = False  # torch's SyncBatchNorm is CUDA-only; same maths over gloo
        plugins.append(AllReduceSyncBatchNorm())
    if cfg.stage.get("ddp_find_unused_parameters") and strategy in ("ddp", "ddp_spawn"):
        # several backward passes per step over disjoint parameter sets (e.g. a GAN's D and G steps)
        extra["strategy"] = f"{strategy}_find_unused_parameters_true"
    quiet_third_party()
    every, bar = int(cfg.trainer.get("log_every_n_steps") or 50), bool(cfg.trainer.get("enable_progress_bar", True))
    shown, extra["enable_progress_bar"] = console_callbacks(str(cfg.stage.name), every, bar)
    return instantiate(cfg.trainer, callbacks=[*callbacks, *shown], logger=loggers or False, plugins=plugins,
                       **extra)  # fmt: skip


def results_from_metrics(metrics: Mapping[str, Any], val_names: list[str]) -> dict[str, dict[str, float]]:
    """`val/<set>/<key>` entries of Lightning's logged metrics → {set: {key: value}}."""
    out: dict[str, dict[str, float]] = {name: {} for name in val_names}
    for key, value in metrics.items():
        parts = key.split("/", 2)
        if len(parts) == 3 and parts[0] == "val" and parts[1] in out:
            out[parts[1]][parts[2]] = float(value)
    return {k: v for k, v in out.items() if v}


def validate(trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule,
             val_names: list[str]) -> dict[str, dict[str, float]]:  # fmt: skip
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return results_from_metrics(trainer.callback_metrics, val_names)


def stage_batch(cfg: DictConfig) -> tuple[int, int]:
    """(source, target) images one training step forwards."""
    from diga.data.datamodule import dataset_config, images_per_step

    dm = cfg.datamodule
    n_src = images_per_step(to_plain(dm.source))
    target = dataset_config(dm.get("target"))
    n_tgt = images_per_step(target) if dm.get("use_target") and target else 0
    return n_src, n_tgt


def estimate_stage_memory(cfg: DictConfig, module: StageModule, val_image: Sequence[int] | None = None,
                          inference_bytes: int | None = None) -> MemoryEstimate:  # fmt: skip
    """The module's memory estimate for one training step of this stage's crop, batch and precision, and for one
    validation batch of `val_image` (H, W) when the stage validates (`inference_bytes`: that part already known)."""
    from diga.data.datamodule import scaled_size

    dm = cfg.datamodule
    crop = scaled_size(dm.crop_size, float(dm.get("scale", 1.0)))
    precision = str(cfg.trainer.get("precision", "32"))
    with without_side_effects(module):  # the probe forward must not move BatchNorm statistics or the RNG
        estimate = module.estimate_memory(crop, *stage_batch(cfg), precision)
    if val_image is None or not module.validates:
        return estimate
    if inference_bytes is None:
        images = int(dm.get("val_batch_size", 1) or 1)
        inference_bytes = module.estimate_inference_memory(val_image, images, precision)
    return replace(estimate, inference=inference_bytes)


def validation_image(cfg: DictConfig, module: StageModule, datamodule: Any) -> tuple[int, int] | None:
    """The validation image (H, W) the pre-flight estimates validation for, or None where it has nothing to decide:
    the stage does not validate, or (on a GPU) it has no validation fallback to choose."""
    if not (module.validates and cfg.get("memory_estimate", True) and hasattr(datamodule, "val_image_size")):
        return None
    if cfg.trainer.get("accelerator") != "cpu" and not getattr(module, "validation_fallback", ()):
        return None
    return datamodule.val_image_size()


class FittedStage(NamedTuple):
    """What the memory pre-flight decided: the module to train, its estimated bytes (CPU), and the memory options
    switched on (a `datamodule.*` one means the datamodule is built again with it)."""

    module: StageModule
    estimate: int | None
    overrides: tuple[str, ...] = ()


def validation_batch_options(cfg: DictConfig, val_image: Sequence[int] | None,
                             options: list[tuple[str, ...]]) -> list[tuple[str, ...]]:  # fmt: skip
    """After the stage's own options: a validation batch of one image (the same predictions; the confusion matrix is
    a sum over images), alone and then with each of them — when validation batches several images."""
    if val_image is None or int(cfg.datamodule.get("val_batch_size", 1) or 1) <= 1:
        return options
    one = ("datamodule.val_batch_size=1",)
    return [*options, one, *((*one, *o) for o in options)]


def cpu_validation_option(cfg: DictConfig, module: StageModule) -> tuple[str, ...]:
    """CPU runs: the stage's `validation_fallback` (batched sliding windows one at a time), whatever memory is free.
    On the CPU a batch of windows buys no time and costs memory: the same HRDA source-only step on 8 ACDC images at
    1920×1080 validated in 989 s (15.8 GiB peak) batched and in 890 s (7.0 GiB) one window at a time, with the same
    mIoU (docs/troubleshooting.md). Outside training, `InferenceConfig.for_device` makes the same choice."""
    if cfg.trainer.get("accelerator") != "cpu":
        return ()
    return tuple(getattr(module, "validation_fallback", ()))


def fit_in_memory(cfg: DictConfig, module: StageModule, val_image: Sequence[int] | None = None,
                  built_from: torch.Tensor | None = None, local_rank: int = 0) -> FittedStage:  # fmt: skip
    """CPU runs: the module to train — validating one window at a time (`cpu_validation_option`), and rebuilt with
    the first memory option that fits when the configured one does not — and its estimated bytes; `MemoryShortError`
    when no option fits (diga.tasks.memory_fit). GPU runs: the stage rebuilt with its `validation_fallback` when
    validation would not fit (`memory_fit.validation_option_on_gpu`).

    `built_from`: the CPU random state `module` was built from; a rebuilt module starts from it too, so that it gets
    the same initial weights (the memory options change no parameter). `local_rank`: this process's GPU."""
    from diga.tasks import memory_fit as mf
    from diga.utils.memory import GIB, available_bytes

    def rebuild(option_cfg: DictConfig) -> StageModule:
        if built_from is not None:
            torch.random.set_rng_state(built_from)
        return build_module(option_cfg)

    unbatched = cpu_validation_option(cfg, module)
    if unbatched:
        log.info("validating one window at a time on the CPU (%s): the same predictions, no slower, less memory",
                 " ".join(unbatched))  # fmt: skip
        cfg = mf.with_overrides(cfg, unbatched)
        module = rebuild(cfg)
    if not cfg.get("memory_estimate", True):
        return FittedStage(module, None, unbatched)
    if cfg.trainer.get("accelerator") != "cpu":
        option = mf.validation_option_on_gpu(cfg, module, val_image, local_rank)
        return FittedStage(rebuild(mf.with_overrides(cfg, option)) if option else module, None, option)
    first = estimate_stage_memory(cfg, module, val_image)
    processes = int(cfg.trainer.get("devices", 1)) if str(cfg.trainer.get("devices", 1)).isdigit() else 1
    free = available_bytes()
    if mf.fits(first, free, processes):
        log.info(first.line(free) + (f" (× {processes} processes)" if processes > 1 else ""))
        return FittedStage(module, first.total * processes, unbatched)
    fallbacks = validation_batch_options(cfg, val_image, module.memory_fallbacks(*stage_batch(cfg)))
    if processes > 1:  # each rank would decide on its own free memory, but ranks must train the same module: warn
        options = f"; use {' or '.join(' '.join(o) for o in fallbacks)}" if fallbacks else ""
        msg = f"{first.line(free)} (× {processes} processes) — will probably be killed for memory{options}"
        log.warning(msg)
        print(f"diga: {msg}", flush=True)
        return FittedStage(module, first.total * processes, unbatched)
    built: dict[tuple[str, ...], StageModule] = {}
    # training options (checkpointing, micro-batches) leave validation as it is: its estimate is made once per
    # combination of the options that change it
    validation = {(): first.inference}

    def estimate_with(overrides: tuple[str, ...]) -> MemoryEstimate:
        built.clear()  # one candidate module alive at a time
        option_cfg = mf.with_overrides(cfg, overrides)
        built[overrides] = rebuild(option_cfg)
        key = tuple(o for o in overrides if o.startswith(("inference.", "datamodule.val_batch_size")))
        estimate = estimate_stage_memory(option_cfg, built[overrides], val_image, validation.get(key))
        validation.setdefault(key, estimate.inference)
        return estimate

    choice, tried = mf.first_that_fits(fallbacks, estimate_with, free, processes)
    step = cfg.get("pipeline_step")
    if choice is None:
        assert free is not None
        tried = [mf.MemoryChoice((), first), *tried]
        raise mf.MemoryShortError(mf.not_fitting_message(str(cfg.stage.name), first, tried, free, step))
    msg = (f"{first.line(free)} — too much; training with {mf.as_given_here(choice.overrides, step)} instead (likely "
           f"peak {choice.estimate.likely_peak / GIB:.1f} GB)")  # fmt: skip
    log.warning(msg)
    print(f"diga: {msg}", flush=True)
    return FittedStage(built[choice.overrides], choice.estimate.total * processes, (*unbatched, *choice.overrides))


def close_run_loggers(trainer: pl.Trainer) -> None:
    """Finish the stage's W&B run once its last metrics are logged.

    Lightning's `WandbLogger` reuses a W&B run that is still open, so without this every later stage of an
    in-process pipeline would log into the first stage's run, under its name and job type.
    """
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        run = getattr(logger, "_experiment", None)  # only a run this logger started; `.experiment` would start one
        if isinstance(logger, WandbLogger) and run is not None and hasattr(run, "finish"):
            run.finish()


def run_fit(cfg: DictConfig) -> dict[str, Any]:
    times = PhaseTimes()
    resume = resume_point(cfg.get("ckpt_path"), cfg.paths.ckpt_dir)  # a damaged or foreign file: named, before work
    pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    selection = apply_selection(cfg)
    with times.phase("build data, model, trainer"):
        datamodule = instantiate(cfg.datamodule, _recursive_=False)
        built_from = torch.random.get_rng_state()
        module = build_module(cfg)
        trainer = build_trainer(cfg)
    log.info(model_summary_line(module))
    with times.phase("memory estimate"):
        module, estimate, options = fit_in_memory(cfg, module, validation_image(cfg, module, datamodule), built_from,
                                                  trainer.local_rank)  # fmt: skip
        if any(o.startswith("datamodule.") for o in options):
            datamodule = instantiate(with_overrides(cfg, options).datamodule, _recursive_=False)
    trainer.callbacks.append(PhaseTimer(times))
    if resume is not None:
        resume_loggers(trainer.loggers, resume.global_step)
    with times.phase("fit (all of the above inside)"):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume.path) if resume else None,
                        weights_only=True)  # fmt: skip
        except SIGTERMException:
            close_run_loggers(trainer)
            raise StageInterrupted(str(cfg.stage.name), trainer.global_step,
                                   Path(cfg.paths.ckpt_dir) / LAST_CHECKPOINT) from None  # fmt: skip
    ckpt_io = trainer.strategy.checkpoint_io
    if isinstance(ckpt_io, AtomicCheckpointIO):
        times.add("checkpoint writes", ckpt_io.write_seconds, ckpt_io.writes)
    val_names = list(module.result_names)  # pooled sets first, then each set
    labels = get_label_set(cfg.label_set)
    results: dict[str, dict[str, float]] = {}
    means = to_plain(cfg.get("report_means")) or {}  # e.g. domain generalisation's mean over the unseen domains
    # the validation that ran at the last step already scored the last weights: no second pass over the sets
    validated_last = module.last_val_step == trainer.global_step and trainer.global_step > 0
    if val_names and selection != "last":  # also report the last model, so the effect of selection is visible
        last = results_from_metrics(trainer.callback_metrics, val_names) if validated_last else None
        last = with_set_means(last or validate(trainer, module, datamodule, val_names), means)
        if trainer.is_global_zero:
            write_results(last, labels, out_dir, stem="results_last")
    restored = restore_selected(trainer, module, selection)
    if trainer.is_global_zero:
        with times.phase("export"):
            module.export(out_dir)
    if val_names:
        if validated_last and not restored:
            results = results_from_metrics(trainer.callback_metrics, val_names)
        if not results:
            with times.phase("final validation"):
                results = validate(trainer, module, datamodule, val_names)
        results = with_set_means(results, means)
        if trainer.is_global_zero:
            write_results(results, labels, out_dir)
            print(f"\n[{cfg.experiment_name} / {cfg.stage.name}] target evaluation after {trainer.global_step} steps")
            print(format_table(results, labels))
    if trainer.is_global_zero:
        times.write(out_dir / TIMINGS)
        log.info("%s timings: %s", cfg.stage.name, times.summary())
    close_run_loggers(trainer)
    # other ranks go on to read what rank 0 wrote (the next stage's init_from)
    trainer.strategy.barrier("diga-stage-outputs-written")
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    first = next(iter(results.values()), {})
    return {"mIoU": first.get("mIoU", float("nan")), **{f"{k}/mIoU": v["mIoU"] for k, v in results.items()},
            "results": results, "memory_estimate_bytes": estimate}  # fmt: skip
