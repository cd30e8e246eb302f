"""How much memory a training step will need, estimated before the stage starts (CPU runs).

On a CPU the kernel's out-of-memory killer ends an over-sized run without a word (exit −9). The estimate here is
measured, not guessed: one forward of the network on a small probe crop, recording every tensor autograd keeps for
the backward pass (`saved_tensors_hooks`), scaled to the real crop and to the number of images a step forwards
with gradients; plus weights, gradients and optimiser state. It is an estimate (allocator overhead, the data
loader and transient buffers come on top) — the rehearsal prints it next to the measured peak.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

GIB = 1024**3


def available_bytes() -> int | None:
    """Memory the kernel can still give this process (Linux `MemAvailable`), or None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux: kilobytes in ru_maxrss)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def current_rss_bytes() -> int | None:
    """This process's resident memory now (Linux), or None when unknown."""
    import os

    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_memory() -> None:
    """Give memory that is no longer used back to the system, between the steps of an in-process pipeline: collect
    the reference cycles Lightning's objects form, empty CUDA's cache, and ask glibc to return its free heap pages
    (freed tensors below its mmap threshold otherwise stay in the process, so each step would start with less)."""
    import ctypes
    import gc

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def saved_activation_bytes(forward: Callable[[], torch.Tensor], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass while `forward()` runs.

    Tensors sharing storage with `exclude` (the weights, counted separately) are left out.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def peak_live_bytes(forward: Callable[[], object]) -> int:
    """The most bytes of tensors created by `forward()` that were alive at one time: the activation peak of a
    forward without gradients (inference), which `saved_activation_bytes` (what autograd keeps) does not measure.

    Every operator's outputs are recorded through a dispatch mode, and each storage counts until it is freed; tensors
    that existed before (weights, the input) are not counted, nor is scratch space inside a kernel.
    """
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    live: dict[int, tuple[StorageWeakRef, int]] = {}
    before: set[int] = set()  # storages that existed before `forward()` (never counted)
    peak = 0

    class LiveBytes(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            nonlocal live, peak
            for t in tree_leaves((args, kwargs)):  # an input never made inside: a weight, a buffer, the input
                if isinstance(t, torch.Tensor):
                    key = StorageWeakRef(t.untyped_storage()).cdata
                    if key not in live:
                        before.add(key)
            out = func(*args, **(kwargs or {}))
            # drop the freed storages first: a new storage may take a freed one's address (the key)
            live = {k: v for k, v in live.items() if not v[0].expired()}
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    ref = StorageWeakRef(t.untyped_storage())
                    if ref.cdata not in before:  # a view of a weight (`t()` of a linear layer's) is no new memory
                        live.setdefault(ref.cdata, (ref, t.untyped_storage().nbytes()))
            peak = max(peak, sum(n for _, n in live.values()))
            return out

    with LiveBytes():
        forward()
    return peak


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# A CPU process's resident peak over the estimate: libraries, data buffers, validation at full resolution and allocator
# slack come on top of what autograd saves. Fitted to the 24 training steps of the full-size rehearsals, whose measured
# peaks were 0.68–1.03 × (1.3 × estimate + 2 GiB); six later steps (benchmarks/memory_options.py: the translator and
# the ResNet-101 DG warm-up per memory option) fell at 0.67–0.98 ×. Six real-crop steps of benchmarks/backbones.py
# fell at 0.70–1.16 × on an AVX2 CPU, and 18 more (every network and stage, fp32 and bf16, 15 checkpointed) at
# 0.72–1.07 × on an AMX CPU. Above 1 are MiT-B5's fp32 warm-up (1.03; 1.16 for a second step) and HRNet-W48 + OCR in
# fp32 (1.06–1.07), while every checkpointed ViT step is at or below 0.93 ×: the over-run follows the network, not
# checkpointing, and is a few percent, so the rule stays one rule. The pre-flight warning compares this likely peak
# with free memory.
PEAK_FACTOR, PEAK_OVERHEAD = 1.3, 2 * 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # student weights + gradients + optimiser state, frozen networks (teacher, translator, VGG)
    activations: int  # what one step keeps for its backward pass
    inference: int = 0  # the peak of one validation batch's inference (no gradients), beside the weights

    @property
    def total(self) -> int:
        """Weights and the larger of the two peaks: a training step's or a validation batch's."""
        return self.weights + max(self.activations, self.inference)

    @property
    def likely_peak(self) -> int:
        """The process's resident peak on CPU that this estimate predicts (see PEAK_FACTOR)."""
        return int(self.total * PEAK_FACTOR) + PEAK_OVERHEAD

    def line(self, available: int | None) -> str:
        free = f"{available / GIB:.1f} GB are available" if available is not None else "free memory unknown"
        validation = f", validation {self.inference / GIB:.1f} GB" if self.inference else ""
        return (f"memory estimate for this stage: about {self.total / GIB:.1f} GB ({self.weights / GIB:.1f} GB weights "
                f"and optimiser state, {self.activations / GIB:.1f} GB activations{validation}), a likely resident "
                f"peak of {self.likely_peak / GIB:.1f} GB; {free}")  # fmt: skip


def probe_size(crop: tuple[int, int], multiple: int = 32, smallest: int = 128) -> tuple[int, int]:
    """Half the crop per side, rounded to `multiple` (strided encoders), but never below `smallest` (or the crop):
    multi-scale discriminators and deep encoders need a few pixels at their coarsest level."""
    return tuple(min(c, max(smallest, (c // 2) // multiple * multiple)) for c in crop)  # type: ignore[return-value]


def autocast_context(precision: str | None, device: str = "cpu") -> contextlib.AbstractContextManager:
    if precision and str(precision).startswith("bf16"):
        return torch.autocast(device, dtype=torch.bfloat16)
    if precision and str(precision).startswith("16"):
        return torch.autocast(device, dtype=torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def without_side_effects(module: nn.Module) -> Iterator[None]:
    """Run a measurement on `module` and leave no trace: its buffers (BatchNorm running statistics, num_batches
    counters, centroids), its train/eval modes and the CPU and CUDA random number generators are as they were.

    The estimate forwards the real network in train mode on random images; without this, a CPU run (which
    estimates) and a GPU run (which does not) would start training from different BatchNorm statistics.
    """
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    modes = [(m, m.training) for m in module.modules()]
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        try:
            yield
        finally:
            with torch.no_grad():
                for buf, value in saved:
                    buf.copy_(value)
            for m, training in modes:
                m.training = training


def scaled_activation_bytes(network: nn.Module, crop: tuple[int, int], images: int, precision: str | None,
                            forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> int:  # fmt: skip
    """Saved activations of `images` forwards of `network` at `crop`, from one probe forward at half the size."""
    h, w = probe_size(crop)
    x = torch.rand(2, 3, h, w)  # two images: train-mode BatchNorm needs more than one value per channel
    run = forward or (lambda t: network(t)[0])
    was_training = network.training
    network.train()
    try:
        with autocast_context(precision):
            per_probe = saved_activation_bytes(lambda: run(x), exclude=network.parameters())
    finally:
        network.train(was_training)
    return int(per_probe / 2 * (crop[0] * crop[1]) / (h * w) * images)
