"""Composing configs outside the command line: where the config tree is, and the two ways to compose.

`python -m diga.train` composes through Hydra's decorator. `compose_config` composes a run the same way for
notebooks, scripts and tests (Hydra's runtime fields filled and registered); `compose_step` composes one step of a
pipeline that is already running, inside its Hydra context, leaving the pipeline's runtime fields as they are.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from diga.config.resolvers import register_resolvers

# the package's config tree: in a checkout `src/diga/conf` links to the top-level `conf/`; a wheel carries a copy
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def config_notice(cwd: Path | None = None) -> str | None:
    """A line saying which config tree is used when the working directory holds another checkout's `conf/`
    (an editable install of one clone, run from another clone), else None."""
    here = (cwd or Path.cwd()) / "conf" / "train.yaml"
    if here.is_file() and here.resolve().parent != CONFIG_DIR.resolve():
        return (f"diga: using the configs of the imported diga package, {CONFIG_DIR.resolve()}; this directory's "
                f"{here.parent} is not read (install this checkout with `pip install -e .` to use it, or add it "
                "with hydra.searchpath=[file://…] for extra experiments)")  # fmt: skip
    return None


def _compose(overrides: list[str], config_name: str, with_hydra_runtime: bool) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=with_hydra_runtime)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=with_hydra_runtime)


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """Compose a run as `python -m diga.train OVERRIDES` would, for notebooks, scripts and tests.

    Hydra's runtime fields are filled and registered (`HydraConfig`), so `${hydra:…}` interpolations resolve and a
    pipeline can recompose its steps with the same overrides.
    """
    from hydra.core.hydra_config import HydraConfig

    cfg = _compose(list(overrides or []), config_name, with_hydra_runtime=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def compose_step(overrides: list[str]) -> DictConfig:
    """Compose one step of a running pipeline (its full override list) without touching the pipeline's Hydra
    runtime (the run directory, the launcher, the command-line overrides stay the pipeline's)."""
    return _compose(list(overrides), "train", with_hydra_runtime=False)
