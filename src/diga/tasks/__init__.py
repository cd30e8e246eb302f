"""Stage runners: what `python -m diga.train stage=…` does for each kind of stage (`stage.task`)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_SNAPSHOT = ".hydra"  # the folder name Hydra uses, so tools that read it (diga.ablation, users' scripts) still do


def run_task(cfg: DictConfig) -> dict[str, Any]:
    """Run the stage `cfg` describes; its metrics are returned and written to `<run dir>/metrics.json`."""
    from diga.config.preflight import PreflightError, overwrite_problem
    from diga.utils.run_lock import RunFolderBusy

    # fail before building anything: a mandatory key (`???`) not given, an input of any planned step missing, no GPU
    OmegaConf.to_container(cfg.stage, resolve=True, throw_on_missing=True)
    check_run(cfg)
    try:
        with _run_folder_lock(cfg):
            if problem := overwrite_problem(cfg):  # again: a run that ended while this one was checking its inputs
                raise PreflightError(problem)
            _write_config_snapshot(cfg)
            _write_environment(cfg)
            metrics = _run(cfg)
            _write_metrics(cfg, metrics)
    except RunFolderBusy as e:
        raise PreflightError(str(e)) from None
    return metrics


def check_run(cfg: DictConfig) -> None:
    """Pre-flight of the run `cfg` describes (`diga.config.preflight`), a pipeline's planned steps included."""
    from diga.config.preflight import check_inputs

    steps = []
    if cfg.stage.get("task") == "pipeline":
        from diga.tasks.pipeline import step_configs

        steps = [(step.name, step.out.root, step_cfg) for step, step_cfg in step_configs(cfg)]
    check_inputs(cfg, steps)


def _run_folder_lock(cfg: DictConfig) -> contextlib.AbstractContextManager:
    """Rank 0 holds the run directory for the whole run (the other ranks of a DDP run share it)."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    from diga.utils.run_lock import run_folder_lock

    if rank_zero_only.rank != 0:
        return contextlib.nullcontext()
    return run_folder_lock(cfg.paths.output_dir, " ".join(sys.argv))


def _write_config_snapshot(cfg: DictConfig) -> None:
    """`<run dir>/.hydra/{config,hydra,overrides}.yaml`, what Hydra itself writes — but only once the run has its
    folder and passed its checks, so a refused start leaves the folder as it was (`hydra.output_subdir: null`).
    Only for the run Hydra launched: a pipeline's in-process steps are composed, not launched."""
    from hydra.core.hydra_config import HydraConfig
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    from diga.utils.io import atomic_write_bytes

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:  # composed without Hydra's runtime (tests, notebooks, pipeline steps run in-process)
        return
    out, launched = Path(cfg.paths.output_dir), OmegaConf.select(hydra_cfg, "runtime.output_dir", default=None)
    if rank_zero_only.rank != 0 or not launched or out.resolve() != Path(launched).resolve():
        return
    files = {"config.yaml": cfg, "hydra.yaml": OmegaConf.create({"hydra": hydra_cfg}),
             "overrides.yaml": hydra_cfg.overrides.task}  # fmt: skip
    for name, node in files.items():
        atomic_write_bytes(out / CONFIG_SNAPSHOT / name, OmegaConf.to_yaml(node).encode())


def _run(cfg: DictConfig) -> dict[str, Any]:
    """Training stages (`fit`), whole pipelines, or a prediction-only stage of `diga.offline`."""
    task = cfg.stage.get("task", "fit")
    if task == "fit":
        from diga.tasks.fit import run_fit

        return run_fit(cfg)
    if task == "pipeline":
        from diga.tasks.pipeline import run_pipeline

        return run_pipeline(cfg)
    from diga.offline import RUNNERS

    if task not in RUNNERS:
        raise ValueError(f"unknown stage.task {task!r} in stage {cfg.stage.name!r}: fit, pipeline or one of "
                         f"{', '.join(RUNNERS)}")  # fmt: skip
    return RUNNERS[task](cfg)


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
