"""OmegaConf conversion helpers (composition and resolvers live in `diga.config`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def to_plain(cfg: Any) -> Any:
    """A resolved plain dict/list for (Dict|List)Config; anything else unchanged."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else cfg


def select_plain(cfg: DictConfig, key: str) -> Any:
    """The resolved plain value at dotted `key`, or None when it is absent, missing (`???`) or does not resolve —
    checks report those through their own messages."""
    try:
        return to_plain(OmegaConf.select(cfg, key, default=None, throw_on_missing=True))
    except Exception:
        return None
