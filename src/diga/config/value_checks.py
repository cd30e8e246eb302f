"""Reject values that are well typed but cannot work, before anything is built.

`steps.source_only=-1` is a valid int, and becomes `trainer.max_steps=-1`, which Lightning reads as "no limit": the
stage would train forever, at learning rate 0 once the schedule ends. A stream of `batch_size: 0` passes every type
check and fails inside torch's DataLoader after the model is built. Each is reported as one line naming the key
that was typed; values of the wrong type are left to `diga.config.type_checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diga.utils.hydra import select_plain

STEPS = "a positive number of training steps"
POSITIVE_STEPS = ("val_every", "ckpt_every")  # validation every 0 steps divides by zero; checkpoints resume runs
NEVER_OR_STEPS = ("log_images_every", "trainer.log_every_n_steps")  # 0 = never
BATCHES = ("datamodule.val_batch_size", "stage.batch_size")
DOMAINS = ("source", "target")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _below(key: str, value: Any, least: int, what: str) -> list[str]:
    """One line when a number is below `least` (anything else is the type check's)."""
    return [f"{key} must be {what}, got {value}"] if _number(value) and value < least else []


def _step_budget_problems(cfg: DictConfig) -> list[str]:
    """Every `steps.<stage>`, and a training stage's `trainer.max_steps` when it was set directly or follows a
    stage that has no budget."""
    steps = select_plain(cfg, "steps")
    steps = steps if isinstance(steps, Mapping) else {}
    out = [p for name, n in steps.items() for p in _below(f"steps.{name}", n, 1, STEPS)]
    out += [f"steps.{name} must be {STEPS}, got None" for name, n in steps.items() if n is None]
    if select_plain(cfg, "stage.task") not in (None, "fit") or not isinstance(cfg.get("trainer"), DictConfig):
        return out
    name, max_steps = select_plain(cfg, "stage.name"), select_plain(cfg, "trainer.max_steps")
    if not OmegaConf.is_interpolation(cfg.trainer, "max_steps"):
        return out + _below("trainer.max_steps", max_steps, 1, STEPS)
    if name not in steps and _number(max_steps) and max_steps < 1:
        out.append(f"steps.{name} is not set, so trainer.max_steps={max_steps} (no limit): set it to {STEPS}")
    return out


def _interval_problems(cfg: DictConfig) -> list[str]:
    out = [p for key in POSITIVE_STEPS for p in _below(key, select_plain(cfg, key), 1, STEPS)]
    return out + [p for key in NEVER_OR_STEPS for p in _below(key, select_plain(cfg, key), 0, f"0 (never) or {STEPS}")]


def _stream_batch_problems(cfg: DictConfig) -> list[str]:
    """Each stream's `batch_size` (no constructor annotation types it: streams are plain dicts)."""
    out = []
    for domain in DOMAINS:
        key = f"datamodule.{domain}.loader.streams"
        streams = select_plain(cfg, key)
        for i, stream in enumerate(streams if isinstance(streams, list) else []):
            size = stream.get("batch_size", 1) if isinstance(stream, Mapping) else 1  # not a mapping: a type problem
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                out.append(f"{key}[{i}].batch_size must be a positive integer, got {size!r}")
    return out


def _set_reference_problems(cfg: DictConfig) -> list[str]:
    """`report_pooled` and `report_means` name validation sets: a misspelt or removed one would drop the pooled set
    or the mean, an empty list has nothing to pool, and a name already taken would replace that set's numbers (a
    mean may name a pooled set)."""
    val = select_plain(cfg, "datamodule.val")
    names = set(val) if isinstance(val, Mapping) else set()
    out = []
    for key in ("report_pooled", "report_means"):
        groups = select_plain(cfg, key)
        groups = groups if isinstance(groups, Mapping) else {}
        for group, sets in groups.items():
            unknown = [s for s in (sets or []) if s not in names]
            if not sets:
                out.append(f"{key}.{group} names no validation set")
            elif unknown:
                out.append(f"{key}.{group} names {', '.join(map(repr, unknown))}, not validation sets of this run "
                           f"(datamodule.val: {', '.join(sorted(names)) or 'none'})")  # fmt: skip
            if group in names:
                out.append(f"{key}.{group}: the name of a set it would replace; choose another")
        names |= set(groups)  # a mean may average a pooled set
    return out


def _target_domain_problems(cfg: DictConfig) -> list[str]:
    """A stage that reads target images, in an experiment without a target domain (domain generalisation)."""
    from diga.data.datamodule import dataset_config

    if dataset_config(select_plain(cfg, "datamodule.target")) is not None:
        return []
    task, name = select_plain(cfg, "stage.task") or "fit", select_plain(cfg, "stage.name")
    if task in ("pseudolabel", "centroids") or (task == "fit" and select_plain(cfg, "datamodule.use_target")):
        return [f"stage {name} reads target images, and experiment {select_plain(cfg, 'experiment_name')} has no "
                "target domain (datamodule.target)"]  # fmt: skip
    return []


def _class_map_problems(cfg: DictConfig) -> list[str]:
    """A class map (`data=folder`) that does not fit the experiment's label set, found before anything is built."""
    from diga.data.class_map import load_class_map
    from diga.data.io import DatasetError
    from diga.data.labels import get_label_set

    val = select_plain(cfg, "datamodule.val")
    slots = {f"datamodule.{d}": select_plain(cfg, f"datamodule.{d}") for d in DOMAINS}
    slots |= {f"datamodule.val.{k}": v for k, v in (val.items() if isinstance(val, Mapping) else [])}
    out = []
    for key, slot in slots.items():
        path = slot.get("class_map") if isinstance(slot, Mapping) else None
        if not path:
            continue
        try:
            load_class_map(path, get_label_set(str(slot.get("label_set") or select_plain(cfg, "label_set"))))
        except (DatasetError, KeyError) as e:
            out.append(f"{key}.class_map: {e}")
    return out


def value_problems(cfg: DictConfig) -> list[str]:
    """One line per count that cannot work, naming the key and the value."""
    batches = [p for key in BATCHES for p in _below(key, select_plain(cfg, key), 1, "a positive integer")]
    return [*_step_budget_problems(cfg), *_interval_problems(cfg), *_stream_batch_problems(cfg), *batches,
            *_set_reference_problems(cfg), *_target_domain_problems(cfg), *_class_map_problems(cfg)]  # fmt: skip
