"""Process launching for the prediction-only stages (pseudo-labels, centroids).

They run on the devices the training stages use: one process per device under the trainer's strategy
(`trainer=ddp` → every GPU of every node; `trainer.strategy=ddp_spawn trainer.devices=2` → two CPU processes with
gloo), launched by Lightning Fabric, which also joins a process group that a Trainer or `torchrun` already made.
Each process takes every world-size-th image (no padding: a `DistributedSampler` would repeat images, and a repeated
image would bias the centroid mean); results are combined with `all_reduce` and only rank 0 writes shared files,
after a barrier.

`stage.device=auto` (default) follows the trainer; an explicit `stage.device=cpu|cuda|cuda:1` runs one process
on that device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning_fabric import Fabric
from omegaconf import DictConfig, OmegaConf

from diga.data.datamodule import DomainAdaptationDataModule, dataset_config, scaled_size
from diga.data.io import DatasetError
from diga.utils.hydra import to_plain

# the parts of the run config the offline stages read; resolved in the launching process (Hydra's runtime
# interpolations cannot be resolved in a spawned child)
_OFFLINE_KEYS = ("stage", "paths", "datamodule")


def build_fabric(cfg: DictConfig) -> Fabric:
    device = str(cfg.stage.get("device", "auto"))
    if device != "auto":
        accelerator, _, index = device.partition(":")
        accelerator = {"cuda": "gpu"}.get(accelerator, accelerator)
        return Fabric(accelerator=accelerator, devices=[int(index)] if index else 1, precision="32-true")
    t = cfg.trainer
    return Fabric(accelerator=t.get("accelerator", "auto"), devices=t.get("devices", 1),
                  num_nodes=t.get("num_nodes", 1), strategy=t.get("strategy", "auto"),
                  precision="32-true")  # fmt: skip


def offline_config(cfg: DictConfig) -> DictConfig:
    """A picklable, fully resolved copy of what the offline stages need."""
    return OmegaConf.create({k: to_plain(cfg[k]) for k in _OFFLINE_KEYS if k in cfg})


def launch(cfg: DictConfig, worker: Callable[[Fabric, DictConfig], dict[str, float]]) -> dict[str, Any]:
    """Run `worker(fabric, cfg)` on every process; returns rank 0's result."""
    fabric = build_fabric(cfg)
    return fabric.launch(worker, offline_config(cfg))


def shard(indices: list[int], fabric: Fabric) -> list[int]:
    """This process's share: every world-size-th item, no item twice, none padded in."""
    return indices[fabric.global_rank :: fabric.world_size]


def target_train_dataset(cfg: DictConfig, **overrides: Any):
    """Target training images without labels or augmentation (optionally resized: `stage.resize`)."""
    from diga.data.transforms import eval_transform

    scale = float(cfg.datamodule.get("scale", 1.0))
    resize = scaled_size(cfg.stage.get("resize"), scale)
    target = dataset_config(cfg.datamodule.get("target"))
    if target is None:
        raise DatasetError(f"experiment {cfg.get('experiment_name')} has no target domain (datamodule.target): stage "
                           f"{cfg.stage.name} reads target images")  # fmt: skip
    kwargs = {"with_labels": False, **overrides}
    if resize:
        kwargs["transform"] = eval_transform(list(resize))
    return DomainAdaptationDataModule.build_eval_dataset(target, "train", scale, **kwargs)
