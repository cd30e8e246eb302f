"""Count the places where the host waits for the device, in any code run under `HostSyncCounter`.

On a GPU every read of a tensor's value on the host (`.item()`, `.tolist()`, `.cpu()`, `bool(t)`, `int(t)`, a
boolean mask that must be counted before the result can be sized, …) stops the host until the GPU has finished all
the work queued before it. A handful per step is harmless; dozens per step leave the GPU idle between them.

Two counts, because a CPU has nothing to wait for:

* `calls`: the Python-level operations that *would* synchronise on a GPU, counted on any device by wrapping them
  (what the CPU test suite holds to a budget);
* `cuda_syncs`: on CUDA, the synchronisations torch itself reports (`torch.cuda.set_sync_debug_mode("warn")`),
  which also catches ones made inside torch operators (what `make gpu-smoke` reports).
"""

from __future__ import annotations

import collections
import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch

# methods whose result lives on the host: each one waits for the device
HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero")
# operators whose output size depends on the data (the device must count before memory is allocated)
DATA_DEPENDENT = (
    "nonzero",
    "masked_select",
    "unique",
    "unique_consecutive",
    "argwhere",
    "where",
    "bincount",
    "repeat_interleave",
)


# code that reads only tensors diga keeps on the host by design: kornia branches on the photometric augmentation's
# random parameters, drawn on the host (`diga.augment.photometric`); a CPU run cannot tell them from device tensors
HOST_SAMPLED = ("/kornia/",)


def _is_mask_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostSyncCounter:
    """Context manager: counts host reads of tensor values while it is active (see the module docstring).

    `counts` maps each operation to its number of calls (a Counter); `calls` is their total; `sites` keeps the
    first few call sites for a readable failure. Reads made by the counter itself are not counted, nor reads made
    from a file whose path contains one of `ignore` (code known to read only host tensors, where a CPU run cannot
    tell host from device).
    """

    def __init__(self, keep_sites: int = 20, ignore: tuple[str, ...] = ()) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.sites: list[str] = []
        self.keep_sites = keep_sites
        self.ignore = ignore
        self.cuda_syncs = 0
        self._saved: list[tuple[Any, str, Any]] = []
        self._depth = 0
        self._warnings: Any = None

    @property
    def calls(self) -> int:
        return sum(self.counts.values())

    def _record(self, name: str) -> None:
        import traceback

        if self.ignore or len(self.sites) < self.keep_sites:
            stack = traceback.extract_stack()
            frame = next((f for f in reversed(stack) if not f.filename.endswith("host_syncs.py")), None)
            if frame is not None and any(part in frame.filename for part in self.ignore):
                return
            if len(self.sites) < self.keep_sites:
                self.sites.append(f"{name} at {frame.filename}:{frame.lineno}" if frame else name)
        self.counts[name] += 1

    def _wrap(self, owner: Any, name: str, predicate: Callable[..., bool] | None = None) -> None:
        original = getattr(owner, name)
        counter = self

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if counter._depth == 0 and (predicate is None or predicate(*args, **kwargs)):
                counter._record(name)
            counter._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                counter._depth -= 1

        self._saved.append((owner, name, owner.__dict__.get(name)))  # None: inherited, delete again on exit
        setattr(owner, name, counted)

    def __enter__(self) -> HostSyncCounter:
        for name in HOST_READS:
            self._wrap(torch.Tensor, name)
        self._wrap(torch.Tensor, "__getitem__", lambda self_, index: _is_mask_index(index))
        self._wrap(torch.Tensor, "__setitem__", lambda self_, index, value: _is_mask_index(index))
        for name in DATA_DEPENDENT:
            if name == "where":  # torch.where(cond) with one argument is nonzero; with three it is elementwise
                self._wrap(torch, name, lambda *a, **k: len(a) + len(k) == 1)
            else:
                self._wrap(torch, name)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self._warnings = warnings.catch_warnings(record=True)
            self._caught = self._warnings.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._warnings is not None:
            torch.cuda.set_sync_debug_mode("default")
            self.cuda_syncs = sum("synchronizing" in str(w.message) for w in self._caught)
            self._warnings.__exit__(*exc)
            self._warnings = None
        for owner, name, original in reversed(self._saved):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._saved = []

    def report(self) -> str:
        where = "\n  ".join(self.sites)
        return f"{self.calls} host reads {dict(self.counts)}; first call sites:\n  {where}"
