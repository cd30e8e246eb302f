"""`python -m diga.train experiment=… stage=…` — compose the config and run one stage.

The function `train(cfg)` does the work (tests call it directly); `main` is the thin Hydra entry point.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations queries PyPI at import otherwise

import hydra
from omegaconf import DictConfig

from diga.config import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from diga.callbacks.preemption import SIGTERM_EXIT_CODE, StageInterrupted
    from diga.config.compose import config_notice
    from diga.config.preflight import PreflightError
    from diga.tasks import run_task
    from diga.tasks.resume import resume_command

    if notice := config_notice():
        print(notice, file=sys.stderr)
    from diga.utils.artifacts import results_notice

    try:
        metrics = run_task(cfg)
    except PreflightError as e:  # a user-facing message, not a stack trace
        print(f"diga: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except StageInterrupted as e:  # not a success: a scheduler must see a non-zero exit (and may requeue)
        if _is_rank_zero():  # a pipeline's isolated step: the pipeline prints how to resume the whole run
            how = "" if cfg.get("pipeline_step") else f"; resume with: {resume_command(cfg)}"
            print(f"diga: {e}{how}", file=sys.stderr, flush=True)
        raise SystemExit(SIGTERM_EXIT_CODE) from None
    if _is_rank_zero():
        print(f"diga: {cfg.stage.name} done; {results_notice(cfg.paths.output_dir)}", flush=True)
    return metrics.get("mIoU") if metrics else None


def _is_rank_zero() -> bool:
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def cli() -> None:
    """Renamed keys in their new spelling (one line each on stderr), then Hydra."""
    from diga.config.deprecations import rewrite_deprecated

    sys.argv[1:], notices = rewrite_deprecated(sys.argv[1:])
    for line in notices:
        print(line, file=sys.stderr)
    main()


if __name__ == "__main__":
    cli()
