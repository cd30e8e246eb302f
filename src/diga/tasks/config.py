"""Composing run configs: where the config tree is, diga's OmegaConf resolvers, and programmatic composition.

`python -m diga.train` composes through Hydra's decorator; notebooks, scripts, tests and the pipeline (which
recomposes every sub-stage) use `compose_config`, which fills Hydra's runtime fields the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from diga.data.labels import get_label_set

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


def wandb_mode() -> str:
    """`online` only when the user asked for it or has credentials; otherwise `offline` (never a login prompt)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    if os.environ.get("WANDB_API_KEY") or (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
        return "online"
    return "offline"


def translator_needs_target(kind: str) -> bool:
    """Training-free translators take their style from target images, so the loader must provide them."""
    return kind in ("fourier", "color")


def num_classes(label_set: str) -> int:
    """The number of classes follows from the label set (never kept equal to it by hand)."""
    return get_label_set(label_set).num_classes


def keys(node: Any) -> list[str]:
    """Keys of a mapping node, in order (e.g. the names of the validation sets)."""
    return [str(k) for k in (node or {})]


def weights_file(backbone: Any) -> str:
    """The published file name of the encoder's pretrained weights (the registry's), for `paths.pretrained_dir`."""
    from diga.models.registry import standard_weights_file

    return standard_weights_file(backbone)


def default_precision(accelerator: Any) -> str:
    """`bf16-mixed` on GPUs (measured: docs/gpus.md), `32-true` elsewhere — `trainer=ddp trainer.accelerator=cpu` gets
    the CPU's precision, not the GPU's."""
    from diga.utils.accelerator import trains_on_cuda

    return "bf16-mixed" if trains_on_cuda(accelerator) else "32-true"


_RESOLVERS = {
    "diga.wandb_mode": wandb_mode,
    "diga.translator_needs_target": translator_needs_target,
    "diga.num_classes": num_classes,
    "diga.keys": keys,
    "diga.weights_file": weights_file,
    "diga.default_precision": default_precision,
}


def register_resolvers() -> None:
    for name, fn in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


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


def compose_stage(overrides: list[str]) -> DictConfig:
    """Compose one sub-stage of a pipeline inside the running Hydra context (or a fresh one)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


register_resolvers()
