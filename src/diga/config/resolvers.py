"""diga's OmegaConf resolvers (`${diga.…:…}` in conf/): values that follow from other values, never kept equal
by hand."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from diga.data.labels import get_label_set
from diga.translation import needs_target_images


def wandb_mode() -> str:
    """`online` only when the user asked for it or has credentials; otherwise `offline` (never a login prompt)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    if os.environ.get("WANDB_API_KEY") or (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
        return "online"
    return "offline"


def num_classes(label_set: str) -> int:
    """The number of classes follows from the label set."""
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


RESOLVERS = {
    "diga.wandb_mode": wandb_mode,
    "diga.translator_needs_target": needs_target_images,
    "diga.num_classes": num_classes,
    "diga.keys": keys,
    "diga.weights_file": weights_file,
    "diga.default_precision": default_precision,
}


def register_resolvers() -> None:
    """Idempotent: every entry point and `compose_config` call it before composing."""
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
