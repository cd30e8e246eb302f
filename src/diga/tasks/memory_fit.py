"""A training stage whose memory estimate does not fit is not started into an out-of-memory kill (CPU runs).

On a CPU the kernel ends an over-sized run with SIGKILL, without a word, hours in. Before the stage starts, its
estimate (`diga.utils.memory`) is compared with the free memory. When it does not fit, the stage's own memory
options are tried in the order its module declares them (`memory_fallbacks`): activation checkpointing first (the
same maths, more time), then micro-batches (the same optimiser step over smaller forward passes; BatchNorm sees the
smaller batches). The first whose estimate fits is switched on with a one-line notice. When none fits the stage
stops before any work (exit 2), saying what it tried and how to go further, in the override form that works where
it runs: a single stage, or a step of `stage=pipeline` (`stage.*` keys go through `stage.step_overrides` there).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from diga.config.preflight import PreflightError
from diga.utils.memory import GIB, MemoryEstimate

log = logging.getLogger(__name__)

LAST_RESORTS = ("trainer.precision=bf16-mixed", "a smaller batch (datamodule.*.loader.streams)",
                "a smaller datamodule.crop_size")  # fmt: skip


@dataclass(frozen=True)
class MemoryChoice:
    overrides: tuple[str, ...]  # () = the stage as configured
    estimate: MemoryEstimate


def fits(estimate: MemoryEstimate, free: int | None, processes: int = 1) -> bool:
    return free is None or estimate.likely_peak * processes <= free


Estimator = Callable[[tuple[str, ...]], MemoryEstimate]


def first_that_fits(candidates: Sequence[tuple[str, ...]], estimate_with: Estimator, free: int | None,
                    processes: int = 1) -> tuple[MemoryChoice | None, list[MemoryChoice]]:  # fmt: skip
    """(the first candidate whose estimate fits, or None; every candidate estimated on the way)."""
    tried = []
    for overrides in candidates:
        choice = MemoryChoice(tuple(overrides), estimate_with(tuple(overrides)))
        tried.append(choice)
        if fits(choice.estimate, free, processes):
            return choice, tried
    return None, tried


def with_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A copy of `cfg` with `key=value` overrides applied (values parsed as YAML, as Hydra does for plain values)."""
    out = copy.deepcopy(cfg)
    for item in overrides:
        key, value = item.split("=", 1)
        OmegaConf.update(out, key, yaml.safe_load(value), merge=False)
    return out


def as_given_here(overrides: Sequence[str], pipeline_step: str | None) -> str:
    """The overrides as a command line takes them where the stage runs: as they are for a single stage; inside a
    pipeline, `stage.*` keys wrapped into `stage.step_overrides` for that step (the others apply to every step)."""
    if not pipeline_step:
        return " ".join(overrides)
    staged = [o for o in overrides if o.startswith("stage.")]
    plain = [o for o in overrides if not o.startswith("stage.")]
    if staged:
        inner = ",".join(f'"{o}"' for o in staged)
        plain.append(f"'++stage.step_overrides={{{pipeline_step}:[{inner}]}}'")
    return " ".join(plain)


def not_fitting_message(stage: str, first: MemoryEstimate, tried: list[MemoryChoice], free: int,
                        pipeline_step: str | None) -> str:  # fmt: skip
    where = f"pipeline step {pipeline_step}" if pipeline_step else f"stage {stage}"
    lines = [f"{where} does not fit in memory: {first.line(free)}"]
    for choice in tried[1:]:
        lines.append(f"  with {as_given_here(choice.overrides, pipeline_step)}: likely peak "
                     f"{choice.estimate.likely_peak / GIB:.1f} GB")  # fmt: skip
    best = min(tried, key=lambda c: c.estimate.likely_peak)
    start = f" (starting from {as_given_here(best.overrides, pipeline_step)})" if best.overrides else ""
    resorts = list(LAST_RESORTS)
    if best.estimate.inference > best.estimate.activations:  # validation, not the training step, sets the peak
        resorts.insert(0, "a smaller validation batch (datamodule.val_batch_size) or fewer inference scales")
    lines.append(f"  it would be killed for memory; lower it further{start} with {', '.join(resorts)}, free "
                 "memory, or start it anyway with memory_estimate=false")  # fmt: skip
    return "\n".join(lines)


# GPU: the caching allocator's fragmentation and the CUDA context come on top of the tensors. The same margin as
# benchmarks/memory_plan.py (estimate × 1.25 + 1.5 GB), an assumption until a GPU has measured it
GPU_MARGIN, GPU_OVERHEAD = 1.25, int(1.5 * GIB)


def validation_option_on_gpu(cfg: DictConfig, module: Any, val_image: Sequence[int] | None,
                             local_rank: int = 0) -> tuple[str, ...]:  # fmt: skip
    """GPU runs: the stage's `validation_fallback` (batched sliding windows one at a time: the same logits) when the
    weights and one validation batch would not fit in this process's free GPU memory, else (); says so when it
    chooses it.

    Each process decides for its own GPU: the choice changes how windows are batched, never what is predicted, so
    DDP ranks may differ. The estimate is measured on the CPU before the module moves (`estimate_inference_memory`).
    """
    import torch

    option = tuple(getattr(module, "validation_fallback", ()))
    if val_image is None or not option or not torch.cuda.is_available():
        return ()
    device = local_rank % torch.cuda.device_count()  # the trainer's, under torchrun, SLURM or Lightning's launcher
    free, _ = torch.cuda.mem_get_info(device)
    precision = str(cfg.trainer.get("precision", "32"))
    images = int(cfg.datamodule.get("val_batch_size", 1) or 1)
    need = (module.weight_bytes() + module.estimate_inference_memory(val_image, images, precision)) * GPU_MARGIN
    need += GPU_OVERHEAD
    if need <= free:
        return ()
    msg = (f"validation of a {val_image[1]}×{val_image[0]} image as configured needs about {need / GIB:.1f} GB of GPU "
           f"memory, {free / GIB:.1f} GB are free on cuda:{device}: validating with {' '.join(option)} (the same "
           "predictions)")  # fmt: skip
    log.warning(msg)
    print(f"diga: {msg}", flush=True)
    return option


class MemoryShortError(PreflightError):
    """No memory option of the stage fits in the free memory."""
