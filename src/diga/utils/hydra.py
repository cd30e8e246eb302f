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


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose a config as `python -m diga.train OVERRIDES` would, for notebooks and scripts.

    The Hydra runtime fields are filled and registered (`HydraConfig`), so `${hydra:…}` interpolations resolve and
    the pipeline can recompose its sub-stages with the same overrides.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=True)
    else:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def to_plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


register_resolvers()
