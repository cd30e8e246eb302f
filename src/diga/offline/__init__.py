"""Stages that predict with a trained model and do not train (`stage.task`: pseudolabel, centroids).

Each runner takes the composed run config and returns its metrics; `diga.tasks` dispatches on `stage.task` through
`RUNNERS`, so a new prediction-only stage is one module here, its entry below and one YAML under conf/stage/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from diga.offline.centroids import run_centroids
from diga.offline.pseudolabel import run_pseudolabel

RUNNERS: dict[str, Callable[[DictConfig], dict[str, Any]]] = {"pseudolabel": run_pseudolabel,
                                                              "centroids": run_centroids}  # fmt: skip

__all__ = ["RUNNERS"]
