"""Train one stage with Lightning, export the final segmentor, evaluate it on every validation set."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor

from diga.evaluation.metrics import format_table
from diga.modules.base import SegmentationModule
from diga.tasks.results import write_results
from diga.tasks.selection import apply_selection, restore_selected
from diga.utils.checkpoint_io import AtomicCheckpointIO
from diga.utils.hydra import to_plain

log = logging.getLogger(__name__)


def build_module(cfg: DictConfig, **extra: Any) -> pl.LightningModule:
    """Instantiate the stage's LightningModule; segmentation stages also get the shared model/optim/val settings."""
    cls = get_class(cfg.stage.module._target_)
    common: dict[str, Any] = {}
    if issubclass(cls, SegmentationModule):
        common = {
            "model_cfg": to_plain(cfg.model),
            "label_set": cfg.label_set,
            "optimizer": to_plain(cfg.optimizer),
            "scheduler": to_plain(cfg.scheduler),
            "head_lr_mult": cfg.head_lr_mult,
            "val_names": list(cfg.datamodule.val or {}),
            "inference": to_plain(cfg.inference),
            "init_from": cfg.stage.get("init_from"),
            "channels_last": bool(cfg.get("channels_last", False)),
            "compile_model": bool(cfg.get("compile_model", False)),
            "seed": int(cfg.seed),
        }
    # plain containers in hparams: checkpoints load with torch's weights_only=True
    return instantiate(cfg.stage.module, _recursive_=False, _convert_="all", **common, **extra)


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not loggers:  # Lightning refuses a LearningRateMonitor without a logger (`logger=none`)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
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
        # several backward passes per step over disjoint parameter sets (the translator's D and G steps)
        extra["strategy"] = f"{strategy}_find_unused_parameters_true"
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins, **extra)


def resolve_ckpt_path(ckpt_path: str | None, ckpt_dir: str | Path) -> str | None:
    """`last` → the run directory's `last.ckpt` if present (a fresh start otherwise); a path must exist."""
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        last = Path(ckpt_dir) / "last.ckpt"
        if last.is_file():
            return str(last)
        log.info("ckpt_path=last but %s does not exist yet: starting from scratch", last)
        return None
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"{ckpt_path}: checkpoint to resume from does not exist")
    return str(ckpt_path)


def run_fit(cfg: DictConfig) -> dict[str, float]:
    pl.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    selection = apply_selection(cfg)
    datamodule = instantiate(cfg.datamodule, _recursive_=False)
    module = build_module(cfg)
    trainer = build_trainer(cfg)
    ckpt = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.ckpt_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=False)
    results: dict[str, dict[str, float]] = {}
    has_val = bool(getattr(module, "val_names", None))
    if has_val and selection != "last":  # also report the last model, so the effect of selection is visible
        trainer.validate(module, datamodule=datamodule, verbose=False)
        if trainer.is_global_zero:
            write_results(module.last_val_results, module.labels, out_dir, stem="results_last")
    restore_selected(trainer, module, selection)
    if trainer.is_global_zero:
        module.export(out_dir)
    if has_val:
        trainer.validate(module, datamodule=datamodule, verbose=False)
        results = module.last_val_results
        if trainer.is_global_zero:
            write_results(results, module.labels, out_dir)
            print(f"\n[{cfg.experiment_name} / {cfg.stage.name}] target evaluation after {trainer.global_step} steps")
            print(format_table(results, module.labels))
    # other ranks go on to read what rank 0 wrote (the next stage's init_from, the pipeline's results.json)
    trainer.strategy.barrier("diga-stage-outputs-written")
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    first = next(iter(results.values()), {})
    return {"mIoU": first.get("mIoU", float("nan")), **{f"{k}/mIoU": v["mIoU"] for k, v in results.items()}}
