"""Stage runners: what `python -m diga.train stage=…` does for each kind of stage (`stage.task`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def run_task(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage `cfg` describes; its metrics are returned and written to `<run dir>/metrics.json`."""
    from diga.tasks.preflight import check_inputs

    # fail before building anything: a mandatory key (`???`) not given, an input of any planned step missing, no GPU
    OmegaConf.to_container(cfg.stage, resolve=True, throw_on_missing=True)
    check_inputs(cfg)
    _write_environment(cfg)
    metrics = _run(cfg)
    _write_metrics(cfg, metrics)
    return metrics


def _run(cfg: DictConfig) -> dict[str, Any]:
    task = cfg.stage.get("task", "fit")
    if task == "fit":
        from diga.tasks.fit import run_fit

        return run_fit(cfg)
    if task == "pseudolabel":
        from diga.tasks.pseudolabel import run_pseudolabel

        return run_pseudolabel(cfg)
    if task == "centroids":
        from diga.tasks.centroids import run_centroids

        return run_centroids(cfg)
    if task == "pipeline":
        from diga.tasks.pipeline import run_pipeline

        return run_pipeline(cfg)
    raise ValueError(f"unknown stage.task {task!r} in stage {cfg.stage.name!r}")


def _write_environment(cfg: DictConfig) -> None:
    """`<run dir>/env.json`: what this run ran with (results.json and the pipeline table point at it)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    from diga.utils import environment

    if rank_zero_only.rank == 0:
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        environment.write(cfg.paths.output_dir, cfg)


def _write_metrics(cfg: DictConfig, metrics: dict[str, Any]) -> None:
    from lightning_fabric.utilities.rank_zero import rank_zero_only  # sets rank_zero_only.rank

    from diga.utils.artifacts import METRICS
    from diga.utils.io import atomic_write_bytes

    if rank_zero_only.rank == 0 and metrics is not None:
        atomic_write_bytes(Path(cfg.paths.output_dir) / METRICS, json.dumps(metrics, indent=1).encode())
