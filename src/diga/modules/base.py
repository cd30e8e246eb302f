"""Shared machinery of every segmentation stage: the student, validation on named sets, optimisation, logging.

Stages subclass `SegmentationModule` and implement `step_losses(batch) -> {"loss": …, …}`. Validation runs the
configured test-time inference on each validation set, accumulates one confusion matrix per set (DDP-summed by
torchmetrics) and logs `val/<set>/mIoU`, per-class IoUs and `val/mIoU` (the first set, for checkpoint monitors).

`micro_batches=N` splits every step's batch into N equal parts that are forwarded and back-propagated one after
the other before the single optimiser step: the gradient is that of the whole batch (the losses are means over
equal-sized parts), peak activation memory about 1/N. BatchNorm then normalises with the statistics of each part;
the two views of an image (warm-up, self-training) always stay in the same part, so they still share them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.strategies import ParallelStrategy
from torch import nn

from diga.data.labels import get_label_set
from diga.evaluation.inference import InferenceConfig, predict_logits, probe_factor
from diga.evaluation.metrics import SegMetric, summarize, with_pooled_sets
from diga.evaluation.visualize import log_class_tables, log_segmentation_images
from diga.models.segmentor import Segmentor
from diga.modules.contract import StageInput, file_input
from diga.modules.optim import build_optimizer, poly_lambda
from diga.utils.artifacts import FINAL_MODEL
from diga.utils.atomic_checkpoints import atomic_torch_save
from diga.utils.memory import (
    MemoryEstimate,
    autocast_context,
    peak_live_bytes,
    probe_size,
    scaled_activation_bytes,
    tensor_bytes,
    without_side_effects,
)
from diga.utils.rng import seed_step

OPTIMIZER_STATE_PER_WEIGHT = {"AdamW": 2, "Adam": 2, "SGD": 1}  # moments kept per trainable weight


def build_model(model_cfg: Mapping[str, Any]) -> Segmentor:
    from hydra.utils import instantiate

    return instantiate(dict(model_cfg), _convert_="all")


def to_float_image(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (what loaders ship, 4× less host→device traffic) → float RGB in [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def upsample(logits: torch.Tensor, size: Sequence[int], align_corners: bool) -> torch.Tensor:
    """Bilinear resize of logits to `size`; logits already at that size are returned as they are."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=align_corners)


def split_batch(batch: Mapping[str, Any], parts: int) -> list[dict[str, Any]]:
    """Split every domain's tensors (and name lists) into `parts` equal chunks along the batch dimension."""
    chunks: list[dict[str, Any]] = [{} for _ in range(parts)]
    for domain, data in batch.items():
        if not isinstance(data, Mapping):
            raise TypeError(f"micro-batching expects a dict of domains, got {type(data).__name__} for {domain!r}")
        n = next(v.shape[0] for v in data.values() if isinstance(v, torch.Tensor))
        if n % parts:
            raise ValueError(f"micro_batches={parts} does not divide the {domain} batch of {n} images")
        k = n // parts
        for i in range(parts):
            chunks[i][domain] = {key: v[i * k : (i + 1) * k] for key, v in data.items()}
    return chunks


class SegmentationModule(pl.LightningModule):
    """Base LightningModule.

    Args:
        model: config of the student segmentor (`_target_` + kwargs). Kept as plain data in the hparams so a
            checkpoint rebuilds its own network (`python -m diga.evaluate ckpt=…`).
        label_set: name of the train-id space (for metric tables and image palettes).
        optimizer: `{_target_: torch.optim.SGD, lr, …, lr_mult: {backbone, head}}` as a plain dict.
        scheduler: `{power, warmup_steps, warmup_ratio}` for the per-iteration poly schedule.
        inference: test-time inference settings used in validation.
        val_names: names of the datamodule's validation sets, in loader order.
        init_from: whole-segmentor weights to start from (a previous stage's checkpoint).
        seed: seeds every random draw inside a step (with the step and rank).
        aux_weight: weight of the auxiliary logits in every loss term, for heads that have them (OCR: 0.1).
        micro_batches: forward/backward the step's batch in this many sequential parts (see the module docstring).
        channels_last: NHWC memory format for the student's convolutions (see benchmarks/).
        compile_model: `torch.compile` the student in place (state-dict keys unchanged; see benchmarks/).
        log_images_every_n_val: log a few prediction images every N validations (0 = never).
        pooled_sets: `{name: [sets]}` reported as one more set whose confusion matrix is the sum of theirs (ACDC's
            406 val images from its four conditions), first in every table and the one `val/mIoU` follows.
    """

    validates: ClassVar[bool] = True
    produces: ClassVar[tuple[str, ...]] = (FINAL_MODEL,)
    last_val_step: int | None = None

    def __init__(
        self,
        model: Mapping[str, Any],
        label_set: str,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        inference: Mapping[str, Any] | None = None,
        val_names: Sequence[str] = ("val",),
        init_from: str | None = None,
        seed: int = 0,
        aux_weight: float = 0.1,
        micro_batches: int = 1,
        channels_last: bool = False,
        compile_model: bool = False,
        log_images_every_n_val: int = 1,
        num_log_images: int = 4,
        pooled_sets: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        if int(micro_batches) < 1:
            raise ValueError(f"micro_batches must be ≥ 1, got {micro_batches}")
        self.save_hyperparameters()
        self.automatic_optimization = int(micro_batches) == 1
        # starting from a previous stage's model: its weights replace the ImageNet encoder, which is then not read
        self.model: Segmentor = build_model({**model, "pretrained": None} if init_from else model)
        if init_from:
            self.model.load_weights(init_from)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile_model:
            self.model.compile()
        self.labels = get_label_set(label_set)
        self.val_names = list(val_names)
        self.inference = InferenceConfig.from_config(inference or {})
        self.val_metrics = nn.ModuleList(SegMetric(self.labels) for _ in self.val_names)
        self.last_val_results: dict[str, dict[str, float]] = {}
        self.last_val_confmats: dict[str, torch.Tensor] = {}  # per set, summed over every process
        self._val_count = 0
        self._val_images: list[dict[str, Any]] = []

    # --- the stage contract (diga.modules.contract) ------------------------------------------------------
    @classmethod
    def declared_inputs(cls, stage: Mapping[str, Any]) -> list[StageInput]:
        """The encoder's ImageNet weights (not read when the stage starts from a model) or whole-model weights."""
        model = dict(stage.get("module", {}).get("model") or {})
        inputs = []
        if not stage.get("init_from") and not model.get("weights"):
            backbone = model.get("backbone")
            name = backbone.get("name") if isinstance(backbone, Mapping) else backbone
            inputs += file_input("weights", f"ImageNet weights of the {name} encoder", model.get("pretrained"),
                                 "model.pretrained",
                                 "e.g. NVlabs SegFormer mit_bN.pth or a torchvision/timm ResNet file")  # fmt: skip
        return inputs + file_input("weights", "whole-model weights", model.get("weights"), "model.weights")

    # --- hooks ----------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        for m in self.val_metrics:  # ddp_spawn shares metric state until the first reset
            m.reset()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # every random draw inside a step (dropout, drop-path, photometric ops, masks) is a function of the step
        seed_step(int(self.hparams.get("seed", 0)), int(self.global_step), int(self.global_rank))

    def on_train_start(self) -> None:
        for m in self.val_metrics:  # sanity-check batches must not pollute the first validation
            m.reset()

    def prep(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch → float [0, 1], in the configured memory format."""
        x = to_float_image(images)
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at input resolution for float images in [0, 1]."""
        return upsample(self.model(x).logits, x.shape[-2:], self.model.align_corners)

    # --- memory -----------------------------------------------------------------------------------------
    grad_forwards_per_image = 1  # student forwards with gradients per source image and step

    def memory_fallbacks(self, source_images: int, target_images: int) -> list[tuple[str, ...]]:
        """Overrides that lower this stage's memory, tried in this order when its estimate does not fit on the CPU
        (`diga.tasks.memory_fit`): activation checkpointing (same maths), then it with 2, 3, … micro-batches that
        divide every domain's batch. (Batched sliding-window validation is not among them: a CPU run validates one
        window at a time from the start, `diga.tasks.fit.cpu_validation_option`.)"""
        ckpt = () if dict(self.hparams.model).get("grad_checkpointing") else ("model.grad_checkpointing=true",)
        batch = math.gcd(source_images, target_images or source_images)
        current = int(self.hparams.micro_batches)
        parts = [n for n in range(current + 1, batch + 1) if batch % n == 0]
        return [*([ckpt] if ckpt else []), *((*ckpt, f"stage.module.micro_batches={n}") for n in parts)]

    @property
    def validation_fallback(self) -> tuple[str, ...]:
        """Batched sliding-window validation (`inference.batched`) can predict one window at a time instead: the same
        logits, less memory."""
        return ("inference.batched=false",) if self.inference.mode == "slide" and self.inference.batched else ()

    def training_logits(self, x: torch.Tensor, crop: Sequence[int] | None = None) -> torch.Tensor:
        """The student's logits as a training step computes them (HRDA: context and one detail window, fused). With
        `crop`, `x` stands in for a crop of that size (a smaller memory probe): a detail window then keeps its share
        of the crop, so the probe's activations scale with the area like the real step's."""
        box = self.model.probe_detail_box(x.shape[-2:], crop) if crop is not None else None
        return self.model.forward_train(x, box).logits

    def frozen_modules(self) -> list[nn.Module]:
        """Networks held besides the student (teacher, translator): weights only."""
        return []

    def weight_bytes(self) -> int:
        """Weights, gradients and optimiser state of the student, and the frozen networks' weights and buffers."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        opt = str(dict(self.hparams.optimizer).get("_target_", "")).rsplit(".", 1)[-1]
        states = OPTIMIZER_STATE_PER_WEIGHT.get(opt, 2)
        weights = tensor_bytes(self.model.parameters()) + tensor_bytes(trainable) * (1 + states)
        return weights + sum(tensor_bytes(m.parameters()) + tensor_bytes(m.buffers()) for m in self.frozen_modules())

    def estimate_memory(self, crop: tuple[int, int], source_images: int, target_images: int,
                        precision: str | None = None) -> MemoryEstimate:  # fmt: skip
        """Weights, gradients, optimiser state and the activations one training step keeps (see diga.utils.memory),
        or the peak of the step's largest teacher forward when that is larger (`teacher_images`)."""
        parts = int(self.hparams.micro_batches)
        images = self.grad_forwards_per_image * source_images / parts
        acts = scaled_activation_bytes(self.model, crop, max(1, round(images)), precision,
                                       forward=lambda x: self.training_logits(x, crop))  # fmt: skip
        teacher = self.teacher_images(source_images, target_images) / parts
        if teacher:  # the teacher's transient peak beside the student graphs alive at that moment
            alive = acts * self.student_forwards_before_teacher / self.grad_forwards_per_image
            acts = max(acts, int(alive) + self.teacher_peak_bytes(crop, max(1, round(teacher)), precision))
        return MemoryEstimate(self.weight_bytes(), acts)

    def teacher_images(self, source_images: int, target_images: int) -> int:
        """Images in the step's largest teacher forward (no gradients; 0: the stage has no teacher). With HRDA its
        peak is large: every detail window of every crop in one batch."""
        return 0

    # of the `grad_forwards_per_image` student forwards, those whose graphs are alive when the teacher runs
    student_forwards_before_teacher = 0

    def teacher_peak_bytes(self, crop: tuple[int, int], images: int, precision: str | None = None) -> int:
        """The activation peak of one no-gradient forward of `images` crops by the teacher (the student's network),
        measured on one image at half the crop — a multi-resolution model's detail window halved with it, so that the
        windows are as many — and scaled by the pixels and the images."""
        h, w = probe_size(crop)
        factor = 2 if (2 * h, 2 * w) == tuple(crop) else 1
        h, w = (h, w) if factor == 2 else tuple(crop)
        x = torch.rand(1, 3, h, w)
        with without_side_effects(self.model), self.model.scaled_for_probe(factor), autocast_context(precision):
            self.model.eval()
            with torch.no_grad():
                peak = peak_live_bytes(lambda: self.model(x))
        return int(peak * factor * factor * images)

    def estimate_inference_memory(self, image: Sequence[int], images: int, precision: str | None = None) -> int:
        """Bytes one validation batch of `images` images of `image` (H, W) needs beside the weights: the peak of the
        configured inference (scales, flips, sliding windows batched or one at a time) and the batch as floats.

        Measured on images `f` and `2f`× smaller per side, their windows (and a detail window) as much smaller, so
        that the windows are as many. The peak is a fixed part (buffers that do not grow with the image) plus a part
        that grows with the pixels; the two probes separate them, and the second is scaled by f².
        """
        f = probe_factor(image, self.inference)

        def peak_at(factor: int) -> int:
            with without_side_effects(self.model), self.model.scaled_for_probe(factor), autocast_context(precision):
                x = torch.rand(1, 3, max(1, int(image[0]) // factor), max(1, int(image[1]) // factor))
                self.model.eval()
                cfg = self.inference.shrunk(factor)
                return peak_live_bytes(lambda: predict_logits(self.model, x, cfg, self.model.num_classes))

        peak = peak_at(f)
        if f > 1:
            smaller = peak  # no second probe: all of the peak is taken to grow with the pixels
            if self.inference.divides(2 * f):
                with suppress(RuntimeError):  # an encoder too deep for the smaller probe's images
                    smaller = peak_at(2 * f)
            growing = (peak - smaller) * 4 / 3 if smaller < peak else peak  # the part ∝ pixels, at 1/f
            peak = peak - growing + growing * f * f
        return int((peak + 3 * 4 * int(image[0]) * int(image[1])) * images)

    # --- training -------------------------------------------------------------------------------------
    def step_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The stage's losses for one (micro-)batch; `loss` is what is back-propagated."""
        raise NotImplementedError

    def loss_phases(self, batch: dict[str, Any]) -> Iterator[dict[str, torch.Tensor]]:
        """The step's losses in groups that are back-propagated one after the other (manual optimisation).

        A stage whose losses come from independent forward passes yields one group per pass, so that each graph is
        freed before the next forward: the peak holds one pass's activations, not all of them (DAFormer's order).
        Default: the whole of `step_losses` as one group.
        """
        yield self.step_losses(batch)

    def loss_phase_count(self) -> int:
        """How many groups `loss_phases` yields per (micro-)batch: under DDP, all backward passes but the last of a
        step accumulate gradients locally and only the last one all-reduces them."""
        return 1

    def batch_size_of(self, batch: Mapping[str, Any]) -> int:
        return int(batch["source"]["image"].shape[0])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self.automatic_optimization:
            losses = self.step_losses(batch)
            self.log_losses(losses, batch_size=self.batch_size_of(batch))
            return losses["loss"]
        parts, phases = int(self.hparams.micro_batches), self.loss_phase_count()
        opt = self.optimizers()
        opt.zero_grad()
        total: dict[str, torch.Tensor] = {}
        for i, chunk in enumerate(split_batch(batch, parts)):
            done = 0
            for losses in self.loss_phases(chunk):  # the phases' `loss` entries add up to the step's loss
                last = i == parts - 1 and done == phases - 1
                with nullcontext() if last else self.gradient_sync_blocked():
                    self.manual_backward(losses["loss"] / parts)
                done += 1
                for k, v in losses.items():
                    total[k] = total.get(k, 0) + v.detach() / parts
            if done != phases:
                raise RuntimeError(f"{type(self).__name__}.loss_phases yielded {done} groups, loss_phase_count() "
                                   f"says {phases}")  # fmt: skip
        opt.step()
        self.lr_schedulers().step()
        self.log_losses(total, batch_size=self.batch_size_of(batch))
        return None

    # --- validation -----------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        x = self.prep(batch["image"])
        y = batch["label"]
        logits = predict_logits(self.model, x, self.inference, self.model.num_classes, out_size=y.shape[-2:])
        pred = logits.argmax(1)
        self.val_metrics[dataloader_idx].update(pred, y)
        if batch_idx == 0 and len(self._val_images) < self.hparams.num_log_images:
            k = min(self.hparams.num_log_images, x.shape[0])
            self._val_images.append(
                {
                    "set": self.val_names[dataloader_idx],
                    "image": x[:k].cpu(),
                    "pred": pred[:k].cpu(),
                    "label": y[:k].cpu(),
                }
            )

    @property
    def result_names(self) -> list[str]:
        """The sets results are reported for: the pooled ones (`pooled_sets`) first, then every validation set."""
        return [*dict(self.hparams.pooled_sets or {}), *self.val_names]

    def on_validation_epoch_end(self) -> None:
        per_set = {}
        for name, metric in zip(self.val_names, self.val_metrics):
            per_set[name] = metric.compute()  # all ranks: compute() all-reduces the confusion matrix
            metric.reset()
        confmats = with_pooled_sets(per_set, self.hparams.pooled_sets) if per_set else {}
        results = {}
        for name, confmat in confmats.items():
            results[name] = summary = summarize(confmat, self.labels)
            # float64: the numbers written to results.json are the confusion matrix's, not float32-rounded
            self.log_dict({f"val/{name}/{k}": torch.tensor(v, dtype=torch.float64) for k, v in summary.items()},
                          sync_dist=False)  # fmt: skip
        if results:
            self.log("val/mIoU", results[self.result_names[0]]["mIoU"], prog_bar=True)
        self.last_val_results, self.last_val_confmats = results, {k: v.cpu() for k, v in confmats.items()}
        self.last_val_step = int(self.global_step)
        every = self.hparams.log_images_every_n_val
        if every and self._val_count % every == 0 and not self.trainer.sanity_checking:
            log_segmentation_images(self.loggers, "val/predictions", self._val_images, self.labels, self.global_step)
            log_class_tables(self.loggers, results, confmats, self.labels, self.global_step)
        self._val_images = []
        self._val_count += 0 if self.trainer.sanity_checking else 1

    # --- export -------------------------------------------------------------------------------------------
    def export(self, out_dir: str | Path) -> Path:
        """`final_model.pt`: config + weights of the student, what `diga.evaluate` and the next stage load."""
        model_cfg = {**dict(self.hparams.model), "pretrained": None, "weights": None}
        path = Path(out_dir) / FINAL_MODEL
        atomic_torch_save({"model_cfg": model_cfg, "label_set": self.hparams.label_set,
                           "state_dict": self.model.state_dict()}, path)  # fmt: skip
        return path

    # --- optimisation ---------------------------------------------------------------------------------
    def param_groups(self) -> dict[str, Any]:
        """Backbone and head parameters; with `optimizer.layer_decay` and an encoder that supports it (ViTs), the
        backbone is split into per-layer groups with decaying learning rates."""
        groups: dict[str, Any] = dict(self.model.param_groups())
        decay = dict(self.hparams.optimizer).get("layer_decay")
        if decay:
            if not hasattr(self.model.backbone, "layer_decay_groups"):
                raise ValueError(f"optimizer.layer_decay={decay}: the {type(self.model.backbone).__name__} encoder "
                                 "has no layers to decay over (ViT encoders do)")  # fmt: skip
            groups["backbone"] = self.model.backbone.layer_decay_groups(float(decay))
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        opt = build_optimizer(self.hparams.optimizer, self.param_groups())
        sched_cfg = dict(self.hparams.scheduler or {})
        max_steps = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else 1
        sched = torch.optim.lr_scheduler.LambdaLR(opt, poly_lambda(max_steps, **sched_cfg))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def gradient_sync_blocked(self) -> AbstractContextManager:
        """DDP's `no_sync` for a backward pass that is not the step's last (gradients accumulate on each rank and
        are all-reduced once, by the last backward); nothing without DDP."""
        strategy = self.trainer.strategy
        return strategy.block_backward_sync() if isinstance(strategy, ParallelStrategy) else nullcontext()

    def logs_this_step(self) -> bool:
        """Whether the logger writes this training step's values (Lightning's rule: every `log_every_n_steps`-th
        step, counted from 1, and a step after which a stop was requested). Diagnostics that need the host are
        computed on those steps only."""
        every = int(self.trainer.log_every_n_steps or 0)
        return every > 0 and ((self.global_step + 1) % every == 0 or self.trainer.should_stop)

    def log_losses(self, losses: Mapping[str, torch.Tensor], batch_size: int) -> None:
        for k, v in losses.items():
            self.log(
                f"train/{k}", v.detach(), prog_bar=k == "loss", batch_size=batch_size, on_step=True, on_epoch=False
            )
