"""Which checkpoint a stage hands on. Default: the last one — target labels never choose a model.

`selection.mode`:
* `last` (default): the final weights.
* `source_val`: the best checkpoint by mIoU on a *source* validation set (`selection.source_set`, a key of
  `datamodule.val` on the source domain) — a label-free criterion for the target.
* `target_val`: the best checkpoint by target-validation mIoU. This is what the reference does in every stage
  and it leaks test labels into model selection; allowed only to reproduce published
  numbers and logged loudly.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from omegaconf import DictConfig, open_dict

from diga.utils.atomic_checkpoints import read_checkpoint

log = logging.getLogger(__name__)

LOUD = (
    "\n"
    + "!" * 100
    + "\n!! selection.mode=target_val: checkpoints are chosen on TARGET VALIDATION LABELS. The reported"
    " numbers are\n!! then optimistically biased (label leakage, as in the reference code). Use only to reproduce"
    " published numbers.\n" + "!" * 100
)


def apply_selection(cfg: DictConfig) -> str:
    """Point the checkpoint callback at the selection metric; returns the mode."""
    sel = cfg.get("selection") or {}
    mode = sel.get("mode", "last")
    if mode == "last":
        return mode
    if mode == "source_val":
        name = sel.get("source_set")
        if not name or name not in (cfg.datamodule.val or {}):
            raise ValueError(
                f"selection.mode=source_val needs selection.source_set naming a datamodule.val set, got {name!r}"
            )
        monitor = f"val/{name}/mIoU"
    elif mode == "target_val":
        log.warning(LOUD)
        monitor = "val/mIoU"
    else:
        raise ValueError(f"unknown selection.mode {mode!r} (last | source_val | target_val)")
    if "model_checkpoint" not in (cfg.get("callbacks") or {}):
        raise ValueError(f"selection.mode={mode} needs callbacks.model_checkpoint")
    with open_dict(cfg):
        cfg.callbacks.model_checkpoint.monitor = monitor
        cfg.callbacks.model_checkpoint.mode = "max"
        cfg.callbacks.model_checkpoint.save_top_k = 1
    return mode


def restore_selected(trainer: pl.Trainer, module: pl.LightningModule, mode: str) -> str | None:
    """Load the selected checkpoint's weights into `module` (no-op for `last`); returns its path."""
    if mode == "last" or trainer.checkpoint_callback is None:
        return None
    best = trainer.checkpoint_callback.best_model_path
    if not best:
        log.warning("selection.mode=%s: no checkpoint was scored; keeping the last weights", mode)
        return None
    state = read_checkpoint(best)["state_dict"]
    module.load_state_dict(state)
    log.info("selection.mode=%s: using %s (score %s)", mode, best, trainer.checkpoint_callback.best_model_score)
    if mode == "target_val":
        log.warning(LOUD)
    return best
