"""Checkpoint files: atomic writes (a kill during a save leaves the previous checkpoint intact) and the one reader.

Lightning's default `TorchCheckpointIO` writes the destination file in place; here the checkpoint goes to a
temporary file in the same directory, is fsync'ed, then `os.replace`d over the target.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from diga.utils.io import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """Also counts the seconds spent writing (`write_seconds`), for the stage's timings."""

    write_seconds = 0.0
    writes = 0

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        t = time.perf_counter()
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(path, buf.getvalue())
        self.write_seconds += time.perf_counter() - t
        self.writes += 1


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path) -> Any:
    """A checkpoint's contents without running any code (`weights_only=True`: tensors and plain containers only),
    memory-mapped so that tensors are not read until used. Every resume and checkpoint scan goes through here."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
