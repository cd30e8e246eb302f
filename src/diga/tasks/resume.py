"""Which checkpoint a training stage resumes from, checked before anything is built.

Every checkpoint is opened with `torch.load(weights_only=True)`: tensors and plain containers only, so a file made
elsewhere cannot run code here. A checkpoint that does not load is named with the reason; `ckpt_path=last` then
resumes from the newest intact checkpoint beside it (with a warning), an explicit path is refused and the newest
intact one is offered.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diga.callbacks.nan_guard import newest_finite_checkpoint
from diga.config.preflight import PreflightError
from diga.utils.artifacts import LAST_CHECKPOINT
from diga.utils.atomic_checkpoints import read_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    path: Path
    global_step: int


def checkpoint_problem(path: Path) -> tuple[str | None, int]:
    """(why `path` cannot be resumed from, or None; its global step)."""
    try:
        ckpt = read_checkpoint(path)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (f"holds Python objects besides tensors and plain containers, which could run code when loaded; diga "
                f"only loads checkpoints with torch.load(weights_only=True) ({first})"), -1  # fmt: skip
    except Exception as e:  # truncated, not a zip, not a torch file
        lines = str(e).strip().splitlines()
        return f"does not load ({lines[-1] if lines else type(e).__name__}): truncated or not a torch checkpoint", -1
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        return "is not a Lightning training checkpoint (no state_dict and global_step)", -1
    return None, int(ckpt["global_step"])


def _newest_intact(folder: Path, besides: Path) -> ResumePoint | None:
    found = newest_finite_checkpoint(p for p in folder.glob("*.ckpt") if p.resolve() != besides.resolve())
    return ResumePoint(*found) if found else None


def resume_point(ckpt_path: str | None, ckpt_dir: str | Path) -> ResumePoint | None:
    """`last` → the run's `last.ckpt` (or, if it is damaged, the newest intact checkpoint of the run; a fresh start
    when there is none yet); a path must exist and load. Raises `PreflightError` naming the file otherwise."""
    if not ckpt_path:
        return None
    ckpt_dir = Path(ckpt_dir)
    if ckpt_path == "last":
        last = ckpt_dir / LAST_CHECKPOINT
        if not last.is_file() and not any(ckpt_dir.glob("*.ckpt")):
            log.info("ckpt_path=last but %s does not exist yet: starting from scratch", last)
            return None
        problem, step = checkpoint_problem(last) if last.is_file() else ("does not exist", -1)
        if problem is None:
            return ResumePoint(last, step)
        other = _newest_intact(ckpt_dir, last)
        if other is None:
            raise PreflightError(f"ckpt_path=last: {last} {problem}, and no other checkpoint in {ckpt_dir} loads; "
                                 "start the stage again with overwrite=true")  # fmt: skip
        msg = f"ckpt_path=last: {last} {problem}; resuming from {other.path} (step {other.global_step}) instead"
        log.warning(msg)
        print(f"diga: {msg}", flush=True)
        return other
    path = Path(ckpt_path)
    if not path.is_file():
        raise PreflightError(f"ckpt_path={path}: checkpoint to resume from does not exist")
    problem, step = checkpoint_problem(path)
    if problem is None:
        return ResumePoint(path, step)
    other = _newest_intact(path.parent, path)
    offer = (
        f"; the newest intact checkpoint beside it is step {other.global_step}: ckpt_path={other.path}" if other else ""
    )
    raise PreflightError(f"ckpt_path={path} {problem}{offer}")


def resume_command(cfg: Any) -> str:
    """The command line that resumes this run: its own overrides, its run directory pinned (a timestamp run_id would
    otherwise name a new one) and, for a single stage, `ckpt_path=last` (a pipeline resumes its steps by itself)."""
    import shlex

    from hydra.core.hydra_config import HydraConfig

    try:
        given = HydraConfig.get().overrides
        kept = ("hydra.run.dir=", "hydra.searchpath=")  # where the run lives, where its configs are
        overrides = [*(o for o in given.hydra if o.lstrip("+~").startswith(kept)), *given.task]
    except ValueError:  # composed without Hydra's runtime (tests, notebooks)
        overrides = []
    overrides = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "overwrite="))]
    pinned = ("run_id=", "paths.output_dir=", "hydra.run.dir=")
    if not any(o.lstrip("+~").startswith(pinned) for o in overrides):
        overrides.append(f"run_id={cfg.run_id}")
    if cfg.stage.get("task", "fit") != "pipeline":
        overrides.append("ckpt_path=last")
    return " ".join(["python", "-m", "diga.train", *(shlex.quote(o) for o in overrides)])
