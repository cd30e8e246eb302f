"""Hydra helpers: custom resolvers and config conversion."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"


def wandb_mode() -> str:
    """`online` only when the user asked for it or has credentials; otherwise `offline` (never a login prompt)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY") or (
        (Path.home() / ".netrc").is_file() and "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore")
    ):
        return "online"
    return "offline"


def translator_needs_target(kind: str) -> bool:
    """Training-free translators take their style from target images, so the loader must provide them."""
    return kind in ("fourier", "color")


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("diga.wandb_mode"):
        OmegaConf.register_new_resolver("diga.wandb_mode", wandb_mode)
    if not OmegaConf.has_resolver("diga.translator_needs_target"):
        OmegaConf.register_new_resolver("diga.translator_needs_target", translator_needs_target)


def to_plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


register_resolvers()
