"""The plan of `stage=pipeline`: the method's recipe (`diga.pipelines`) laid out in run directories.

Pure: a config in, a list of `Step`s out; nothing runs and nothing is written (tests/unit/test_pipeline_plan.py).
Each step gets a content key (its stage, its overrides, its upstream steps' keys), under which the step cache
(`diga.tasks.step_cache`) shares a step between runs that compute the same thing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from diga.pipelines import get_recipe
from diga.utils.artifacts import StageOutputs
from diga.utils.hydra import to_plain


@dataclass
class Step:
    name: str  # directory / row name
    stage: str  # conf/stage/<stage>.yaml
    out: StageOutputs  # its run directory
    overrides: list[str] = field(default_factory=list)
    oracle: bool = False  # train on the target with its labels (upper bound)
    row: str | None = None  # label in the results table (None: not a table row)
    adapted: bool = False  # a model the pipeline hands on (the headline is the last such row)
    key: str = ""  # what the step computes: its overrides, with earlier steps' directories replaced by their keys
    link: Path | None = None  # `<run dir>/<NN>_<name>` when the step lives in the step cache


def step_key(stage: str, overrides: list[str], earlier: list[Step], oracle: bool,
             data: Mapping[str, Any] | None = None) -> str:  # fmt: skip
    """A content key: same key ⇔ same computation (same stage, same overrides, same upstream steps, same data)."""
    normalized = []
    for o in overrides:
        for s in earlier:
            o = o.replace(str(s.out.root), f"@{s.key}")
        normalized.append(o)
    content = {"stage": stage, "overrides": normalized, "oracle": oracle, **({"data": data} if data else {})}
    blob = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def data_identity(cfg: DictConfig) -> dict[str, Any]:
    """What each dataset slot reads (class, root, generator spec, …; not its loader settings): a default that changes
    between versions — the toy's generator — must not let a cached step of the old data stand in for the new."""
    dm = to_plain(cfg.get("datamodule")) or {}
    slots = {d: dm.get(d) for d in ("source", "target")} | {f"val.{k}": v for k, v in (dm.get("val") or {}).items()}
    return {name: {k: v for k, v in slot.items() if k != "loader"} for name, slot in slots.items()
            if isinstance(slot, Mapping)}  # fmt: skip


ALL_STEPS = "*"  # a `stage.step_overrides` key whose overrides go to every step (before the step's own)


def extra_overrides(per_step: Mapping[str, Sequence[str]] | None, name: str, stage: str) -> list[str]:
    """A step's own `stage.step_overrides`: those for every step (`"*"`), then those under its name (or, failing
    that, its stage's name)."""
    per_step = per_step or {}
    return [*per_step.get(ALL_STEPS, []), *per_step.get(name, per_step.get(stage, []))]


def plan(cfg: DictConfig, root: Path, base: list[str] | None = None,
         per_step: dict[str, list[str]] | None = None) -> list[Step]:  # fmt: skip
    """The steps of `stage.method`'s recipe (`diga.pipelines`), each with its run directory and content key.

    With `stage.step_cache` every step lives in `<cache>/<name>-<key>` (linked from the run directory): runs that
    share steps — the rows of an ablation sweep — compute each shared step once.
    """
    st = to_plain(cfg.stage)
    steps: list[Step] = []
    cache = Path(st["step_cache"]) if st.get("step_cache") else None
    shared = [o for o in (base or []) if not o.lstrip("+~").startswith(NOT_PART_OF_A_STEP)]
    data = data_identity(cfg)

    def add(name: str, stage: str, overrides: list[str] | None = None, *, oracle: bool = False,
            row: str | None = None, adapted: bool = False) -> StageOutputs:  # fmt: skip
        overrides = list(overrides or [])
        extra = extra_overrides(per_step, name, stage)
        key = step_key(stage, [*shared, *overrides, *extra], steps, oracle, data)
        link = root / f"{len(steps):02d}_{name}"
        out = StageOutputs(cache / f"{name}-{key}" if cache else link)
        steps.append(Step(name, stage, out, overrides, oracle=oracle, row=row, adapted=adapted, key=key,
                          link=link if cache else None))  # fmt: skip
        return out

    get_recipe(str(st.get("method", "diga")))(st, add)
    return steps


# command-line overrides that name a run, not what a step computes (left out of step keys)
NOT_PART_OF_A_STEP = ("run_id=", "ablation=", "paths.root_dir=", "paths.log_dir=", "trainer.enable_progress_bar=")


def step_overrides(step: Step, base: list[str], extra: list[str]) -> list[str]:
    """The full override list of one sub-stage (what `python -m diga.train` would be given for it)."""
    oracle = ["datamodule.target_as_source=true"] if step.oracle else []  # target images with their labels
    return [*base, f"stage={step.stage}", *step.overrides, *oracle, *extra, f"paths.output_dir={step.out.root}",
            f"pipeline_step={step.name}"]  # fmt: skip
