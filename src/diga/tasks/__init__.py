"""Stage runners: what `python -m diga.train stage=…` does for each kind of stage (`stage.task`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def run_task(cfg: DictConfig) -> dict[str, Any]:
    # fail before building anything when a stage's mandatory input (`???`) was not given
    OmegaConf.to_container(cfg.stage, resolve=True, throw_on_missing=True)
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
