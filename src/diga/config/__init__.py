"""The config layer: composing runs, diga's resolvers, and the checks a composed config passes before anything is
built (types against constructor signatures, value ranges, image sizes against the encoder, every input on disk).

Above the stage modules (pre-flight asks the stage contract, `diga.modules.contract`), below the task runners.
"""

from diga.config.compose import CONFIG_DIR, compose_config, compose_step
from diga.config.preflight import PreflightError, check_inputs
from diga.config.resolvers import register_resolvers

__all__ = ["CONFIG_DIR", "PreflightError", "check_inputs", "compose_config", "compose_step", "register_resolvers"]

register_resolvers()
