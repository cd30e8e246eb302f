"""One LightningDataModule for every stage: source and target training streams, one or more val sets.

Each domain may have several *streams* over the same file list (the reference's low-/high-scale `ls`/`hs`
loaders): every stream resizes whole images to its own size, then crops to the common
crop size. Lightning iterates all streams together (`CombinedLoader`, max_size_cycle) and
`on_before_batch_transfer` concatenates the streams of a domain, `ls` first, so a training step sees
`batch["source"]` and `batch["target"]`, each a dict of `image` (uint8 B×3×H×W), `label`, … .

Dataset configs (conf/data/*.yaml) carry a `loader:` block (splits, streams, random rescale, eval resize, class
retry) that is consumed here; the rest is passed to the dataset class. A stage's batch composition is the
`streams` of each domain (set per experiment and stage in conf/recipe/).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler

from diga.data.datasets.base import SegmentationDataset
from diga.data.samplers import ShardSampler, StepSampler
from diga.data.transforms import ClassContentRetry, eval_transform, seed_transform, train_transform, worker_init_fn
from diga.data.workers import worker_context

DOMAINS = ("source", "target")


def _plain(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return copy.deepcopy(dict(cfg))


class DomainAdaptationDataModule(pl.LightningDataModule):
    """Source (labelled) + target (unlabelled) training streams and named validation sets.

    Args:
        source / target: dataset configs (`_target_` + kwargs + `loader:` block); target may be None
            (source-only and domain-generalisation stages).
        val: name → dataset config of each validation set (evaluated with labels, no augmentation).
        crop_size: training crop (H, W) shared by all streams. Each domain's `loader.random_scale` is the (lo, hi)
            range of the reference's anisotropic rescale before the crop, or None for a plain crop.
        use_target: whether the training loader includes the target streams (stages that need them).
        paired: the stage combines source image b with target image b (self-training's class-mix), so both
            domains must deliver the same number of images per step; checked here, before any model is built.
        target_as_source: train on the target training set *with its labels* in the source slot (the
            target-supervised upper bound of the pipeline); the target stream is then not loaded.
        target_diagnostic_labels: also load the target training labels, for diagnostics only (self-training logs
            the per-class precision of its pseudo-labels); no loss and no model selection ever reads them. Only for
            benchmarks that have them (the toy).
        scale: multiplies every configured image size (crop, stream resizes, evaluation resizes) — a configuration
            at reduced resolution without editing its sizes (the rehearsal runs the real experiments at 1/8).
        target_pseudo_label_dir: pseudo-labels to read with the target images (self-training).
        step_sampler: training order and augmentation as a function of (seed, global step) — a resumed run sees
            what the uninterrupted one would (`StepSampler`); False = plain shuffled epochs.
    """

    def __init__(
        self,
        source: Mapping[str, Any],
        target: Mapping[str, Any] | None = None,
        val: Mapping[str, Mapping[str, Any]] | None = None,
        crop_size: tuple[int, int] = (512, 896),
        use_target: bool = True,
        paired: bool = False,
        target_as_source: bool = False,
        scale: float = 1.0,
        target_diagnostic_labels: bool = False,
        target_pseudo_label_dir: str | None = None,
        num_workers: int = 2,
        val_batch_size: int = 1,
        pin_memory: bool | Literal["auto"] = "auto",
        persistent_workers: bool = False,
        seed: int = 0,
        step_sampler: bool = True,
    ) -> None:
        super().__init__()
        target = dataset_config(target)
        self.cfg = {"source": _plain(source), "target": target}
        if target_as_source:
            if target is None:
                raise ValueError("datamodule.target_as_source needs a target dataset")
            self.cfg["source"] = {
                **_plain(target),
                "loader": {**_plain(target).get("loader", {}), "class_retry": False},
            }
            use_target = False
        self.val_cfg = {k: _plain(v) for k, v in (val or {}).items()}
        self.scale = float(scale)
        self.target_diagnostic_labels = target_diagnostic_labels
        self.crop_size = scaled_size(crop_size, self.scale)
        self.use_target = use_target and target is not None
        self.paired = paired
        if paired and self.use_target:
            check_paired_streams(self.cfg["source"], self.cfg["target"])
        self.target_pseudo_label_dir = target_pseudo_label_dir
        self.num_workers = num_workers
        self.val_batch_size = val_batch_size
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = seed
        self.step_sampler = step_sampler
        self.train_sets: dict[str, SegmentationDataset] = {}
        self.val_sets: dict[str, SegmentationDataset] = {}
        self.stream_batch: dict[str, int] = {}

    # --- building datasets --------------------------------------------------------------------------
    @staticmethod
    def split_cfg(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(dataset kwargs incl. `_target_`, loader settings)."""
        cfg = copy.deepcopy(dict(cfg))
        loader = cfg.pop("loader", {}) or {}
        return cfg, loader

    def build_train_dataset(self, domain: str, stream: Mapping[str, Any], **overrides: Any) -> SegmentationDataset:
        ds_cfg, loader = self.split_cfg(self.cfg[domain] or {})
        resize = scaled_size(stream.get("resize"), self.scale)
        tf = train_transform(self.crop_size, resize, loader.get("random_scale", (0.7, 1.0)))
        transform: Any = ClassContentRetry(tf) if domain == "source" and loader.get("class_retry", False) else tf
        rcs = loader.get("rare_class_sampling") if domain == "source" else None
        if rcs:  # DAFormer's re-crop replaces the reference's class-content retry
            from diga.data.rare_class_sampling import (
                DAFORMER_MIN_CROP_RATIO,
                DAFORMER_MIN_PIXELS,
                DAFORMER_TRAIN_SIZE,
                RareClassCropRetry,
                scale_min_pixels,
            )

            size = resize or self.native_size(domain)
            train_size = rcs.get("train_size") or DAFORMER_TRAIN_SIZE  # the resize min_pixels is stated at
            min_px = scale_min_pixels(float(rcs.get("min_pixels", DAFORMER_MIN_PIXELS)), size, train_size)
            transform = RareClassCropRetry(tf, min_px, float(rcs.get("min_crop_ratio", DAFORMER_MIN_CROP_RATIO)))
        kwargs: dict[str, Any] = {
            "split": loader.get("splits", {}).get("train", "train"),
            "transform": transform,
            "with_labels": domain == "source" or (domain == "target" and self.target_diagnostic_labels),
        }
        if domain == "target" and self.target_pseudo_label_dir:
            kwargs["pseudo_label_dir"] = self.target_pseudo_label_dir
        if domain == "target" and loader.get("pseudo_margins"):
            kwargs["pseudo_margins"] = list(loader["pseudo_margins"])
        kwargs.update(overrides)
        return instantiate(ds_cfg, **kwargs, _convert_="all")

    @staticmethod
    def build_eval_dataset(cfg: Mapping[str, Any], split_key: str = "val", scale: float = 1.0,
                           **overrides: Any) -> SegmentationDataset:  # fmt: skip
        """Un-augmented dataset (validation, evaluation, pseudo-labelling, centroids)."""
        ds_cfg, loader = DomainAdaptationDataModule.split_cfg(cfg)
        resize = scaled_size(loader.get("eval_resize"), scale)
        kwargs: dict[str, Any] = {
            "split": loader.get("splits", {}).get(split_key, split_key),
            "transform": eval_transform(resize, loader.get("eval_resize_label", False)),
            "with_labels": True,
        }
        kwargs.update(overrides)
        return instantiate(ds_cfg, **kwargs, _convert_="all")

    def native_size(self, domain: str) -> tuple[int, int]:
        """(H, W) of the domain's first training image (for the size-relative rare-class crop minimum)."""
        from diga.data.io import read_rgb

        ds_cfg, loader = self.split_cfg(self.cfg[domain] or {})
        probe = instantiate(ds_cfg, split=loader.get("splits", {}).get("train", "train"), with_labels=False,
                            _convert_="all")  # fmt: skip
        return tuple(read_rgb(probe.samples[0].image).shape[:2])  # type: ignore[return-value]

    def val_image_size(self) -> tuple[int, int] | None:
        """(H, W) the inference memory estimate is made for, or None without validation sets: per set `eval_resize`,
        or the size of its first image (sets of one size: Cityscapes, BDD100K; a set of mixed sizes at native size,
        such as Mapillary without `eval_resize`, may hold larger ones), the largest over the sets."""
        from diga.data.io import read_rgb

        sizes = []
        for cfg in self.val_cfg.values():
            _, loader = self.split_cfg(cfg)
            size = scaled_size(loader.get("eval_resize"), self.scale)
            if size is None:
                ds = self.build_eval_dataset(cfg, scale=self.scale)
                size = tuple(read_rgb(ds.samples[0].image).shape[:2]) if len(ds) else None
            if size is not None:
                sizes.append((int(size[0]), int(size[1])))
        return max(sizes, key=lambda hw: hw[0] * hw[1]) if sizes else None

    def rare_class_stats(self) -> Any:
        """Per-image class pixel counts of the source training set, computed once and cached next to the dataset."""
        from diga.data.rare_class_sampling import class_pixel_counts, default_fallback_cache_dir

        if getattr(self, "_rcs_stats", None) is None:
            ds_cfg, loader = self.split_cfg(self.cfg["source"] or {})
            labelled = instantiate(ds_cfg, split=loader.get("splits", {}).get("train", "train"), with_labels=True,
                                   _convert_="all")  # fmt: skip
            self._rcs_stats = class_pixel_counts(labelled, fallback_cache_dir=default_fallback_cache_dir(),
                                                 num_workers=max(1, self.num_workers))  # fmt: skip
        return self._rcs_stats

    def prepare_data(self) -> None:
        """Rank 0 (once per node) counts the source classes for rare class sampling; the other ranks read the cache."""
        if self.cfg["source"] and (self.cfg["source"].get("loader") or {}).get("rare_class_sampling"):
            self.rare_class_stats()

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and not self.train_sets:
            for domain in DOMAINS:
                if self.cfg[domain] is None or (domain == "target" and not self.use_target):
                    continue
                _, loader = self.split_cfg(self.cfg[domain])
                for i, stream in enumerate(loader.get("streams") or [{"resize": None, "batch_size": 2}]):
                    key = f"{domain}_{i}"
                    self.train_sets[key] = self.build_train_dataset(domain, stream)
                    self.stream_batch[key] = int(stream.get("batch_size", 1))
                    if len(self.train_sets[key]) < self.stream_batch[key]:
                        raise ValueError(
                            f"{self.train_sets[key]!r}: {len(self.train_sets[key])} images cannot fill one batch of "
                            f"{self.stream_batch[key]} ({domain} stream {i}); lower its batch_size"
                        )
                    seed_transform(
                        self.train_sets[key].transform, self.seed + 1000 * i + (0 if domain == "source" else 1)
                    )
        if stage in (None, "fit", "validate", "test") and not self.val_sets:
            self.val_sets = {name: self.build_eval_dataset(cfg, scale=self.scale) for name, cfg in self.val_cfg.items()}

    @property
    def val_names(self) -> list[str]:
        return list(self.val_cfg)

    # --- loaders ------------------------------------------------------------------------------------
    def pins_memory(self) -> bool:
        """`pin_memory=auto`: page-locked batches (asynchronous host→device copies) when training on CUDA."""
        if self.pin_memory != "auto":
            return bool(self.pin_memory)
        return self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool, drop_last: bool,
                sampler: Sampler | None = None, workers: int | None = None) -> DataLoader:  # fmt: skip
        workers = self.num_workers if workers is None else workers
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=self.pins_memory(),
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=worker_init_fn if workers > 0 else None,
            multiprocessing_context=worker_context(workers),
            collate_fn=collate,
        )

    def train_dataloader(self) -> CombinedLoader:
        """All training streams, iterated together; `num_workers` loader processes per process (GPU) in all, shared
        by the streams in proportion to their batch sizes."""
        loaders = {}
        workers = split_workers(self.num_workers, [self.stream_batch[k] for k in self.train_sets])
        for i, (k, ds) in enumerate(self.train_sets.items()):
            sampler = None
            rcs = (
                (self.cfg["source"].get("loader") or {}).get("rare_class_sampling") if k.startswith("source") else None
            )
            if rcs and (self.trainer is None or self.trainer.max_steps <= 0):
                raise ValueError("rare class sampling needs an iteration budget (trainer.max_steps > 0)")
            if rcs:
                from diga.data.rare_class_sampling import (
                    DAFORMER_LABEL_SIZE,
                    DAFORMER_MIN_PIXELS,
                    DAFORMER_TEMPERATURE,
                    RareClassSampler,
                )

                sampler = RareClassSampler.from_stats(
                    self.rare_class_stats(), self.stream_batch[k], self.trainer.max_steps, self.seed * 1000 + i,
                    start_step=lambda: int(self.trainer.global_step),
                    temperature=float(rcs.get("temperature", DAFORMER_TEMPERATURE)),
                    min_pixels=float(rcs.get("min_pixels", DAFORMER_MIN_PIXELS)),
                    reference_size=rcs.get("label_size") or DAFORMER_LABEL_SIZE,  # label maps min_pixels counts on
                )  # fmt: skip
            elif self.step_sampler and self.trainer is not None and self.trainer.max_steps > 0:
                sampler = StepSampler(len(ds), self.stream_batch[k], self.trainer.max_steps, self.seed * 1000 + i,
                                      start_step=lambda: int(self.trainer.global_step))  # fmt: skip
            loaders[k] = self._loader(ds, self.stream_batch[k], True, True, sampler, workers[i])
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per validation set; under DDP each rank scores its own share, no image twice (`ShardSampler`)."""
        world = self.trainer.world_size if self.trainer is not None else 1
        for name, ds in self.val_sets.items():
            if len(ds) < world:
                raise ValueError(f"{ds!r} (validation set {name!r}) has {len(ds)} images, fewer than the {world} "
                                 "processes that validate it: every process needs at least one")  # fmt: skip
        return [self._loader(ds, self.val_batch_size, False, False, ShardSampler(len(ds)))
                for ds in self.val_sets.values()]  # fmt: skip

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training and isinstance(batch, dict):
            return merge_streams(batch)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return widen_labels(batch)


def split_workers(total: int, batch_sizes: list[int]) -> list[int]:
    """`total` loader processes shared by streams in proportion to their batch sizes (largest remainders), at least
    one per stream when `total` > 0 — a stream without a worker would load in the training process."""
    if total <= 0 or not batch_sizes:
        return [0] * len(batch_sizes)
    weight = sum(batch_sizes)
    exact = [total * b / weight for b in batch_sizes]
    share = [max(1, int(e)) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: int(exact[i]) - exact[i])
    for i in by_remainder[: max(0, total - sum(share))]:
        share[i] += 1
    return share


def dataset_config(cfg: Any) -> dict[str, Any] | None:
    """A slot's dataset config, or None when the slot holds none: empty, or only a stage's loader settings merged
    into an experiment without that domain (domain generalisation has no target)."""
    plain = _plain(cfg) if cfg else {}
    return plain if plain.get("_target_") else None


def scaled_size(size: Any, scale: float) -> tuple[int, int] | None:
    """(H, W) × `scale`, rounded (None stays None)."""
    if size is None:
        return None
    return (max(1, round(int(size[0]) * scale)), max(1, round(int(size[1]) * scale)))


def describe_streams(cfg: Mapping[str, Any]) -> str:
    """`GTA5: 2 @720×1280 + 1 @1052×1914` — a domain's batch composition, for messages."""
    name = str(cfg.get("_target_", "?")).rsplit(".", 1)[-1]
    parts = []
    for s in (cfg.get("loader") or {}).get("streams") or []:
        size = "native" if not s.get("resize") else "×".join(str(v) for v in s["resize"])
        parts.append(f"{s.get('batch_size', 1)} @{size}")
    return f"{name}: {' + '.join(parts) or 'no streams'}"


def images_per_step(cfg: Mapping[str, Any]) -> int:
    return sum(int(s.get("batch_size", 1)) for s in (cfg.get("loader") or {}).get("streams") or [])


def check_paired_streams(source: Mapping[str, Any], target: Mapping[str, Any] | None) -> None:
    """Self-training pairs source image b with target image b: both domains must deliver as many images per step."""
    if target is None:
        raise ValueError("this stage pairs source and target images, but no target dataset is configured")
    ns, nt = images_per_step(source), images_per_step(target)
    if ns != nt:
        raise ValueError(
            f"source and target batches do not pair: source streams [{describe_streams(source)}] give {ns} images "
            f"per step, target streams [{describe_streams(target)}] give {nt}; self-training pastes source image b "
            "onto target image b, so set datamodule.source.loader.streams / datamodule.target.loader.streams to the "
            "same total (conf/recipe/<experiment>/<stage>.yaml holds the authors' composition)"
        )


def merge_streams(batch: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"source_0": b0, "source_1": b1, "target_0": …} → {"source": cat(b0, b1), "target": …} (stream order kept)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for key in sorted(batch, key=lambda k: (k.rsplit("_", 1)[0], int(k.rsplit("_", 1)[1]))):
        if batch[key] is not None:
            out.setdefault(key.rsplit("_", 1)[0], []).append(batch[key])
    return {domain: _cat(parts) for domain, parts in out.items()}


def _cat(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return dict(parts[0])
    merged: dict[str, Any] = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        merged[k] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) else [x for v in vals for x in v]
    return merged


LABEL_KEYS = ("label", "pseudo_label")


def widen_labels(batch: Any) -> Any:
    """uint8 label maps (how loaders ship them) → int64, what cross-entropy and index arithmetic need; in place in
    every (nested) dict of the batch, on whatever device the batch is on."""
    if isinstance(batch, dict):
        for k, v in batch.items():
            if k in LABEL_KEYS and isinstance(v, torch.Tensor):
                batch[k] = v.long()
            elif isinstance(v, dict):
                widen_labels(v)
    return batch


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep strings as lists. Images of different sizes (val at native size) need batch size 1."""
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        elif isinstance(vals[0], int):
            out[k] = torch.tensor(vals)
        else:
            out[k] = vals
    return out


def inference_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """The loader of the offline passes (evaluation, pseudo-labels, centroids): in order, `collate`d, its workers
    started as the training loaders' are (`worker_context`)."""
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                      multiprocessing_context=worker_context(num_workers))  # fmt: skip
