"""OmegaConf conversion helpers (composition and resolvers live in `diga.tasks.config`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def to_plain(cfg: Any) -> Any:
    """A resolved plain dict/list for (Dict|List)Config; anything else unchanged."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else cfg
