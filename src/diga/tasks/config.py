"""Deprecated import path: composition moved to `diga.config` (kept so that users' scripts and notebooks run)."""

import warnings

from diga.config.compose import CONFIG_DIR, compose_config
from diga.config.resolvers import register_resolvers

warnings.warn("diga.tasks.config is deprecated: import compose_config, CONFIG_DIR and register_resolvers from "
              "diga.config", FutureWarning, stacklevel=2)  # fmt: skip

__all__ = ["CONFIG_DIR", "compose_config", "register_resolvers"]
