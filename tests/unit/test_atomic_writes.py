"""Checkpoints, pseudo-labels and centroids are written atomically: a crash or SIGKILL mid-write keeps the old file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diga.centroids import load_centroids, save_centroids
from diga.data.io import save_label_png
from diga.utils.atomic_checkpoints import AtomicCheckpointIO


def _crash_on_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(os, "replace", boom)


def test_crash_keeps_previous_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt, pl, cen = tmp_path / "last.ckpt", tmp_path / "pl.png", tmp_path / "centroids.pt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, ckpt)
    save_label_png(pl, np.full((4, 4), 3, np.uint8))
    save_centroids(cen, torch.ones(2, 3), torch.ones(2), "toy")
    _crash_on_replace(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, ckpt)
    with pytest.raises(OSError, match="simulated crash"):
        save_label_png(pl, np.full((4, 4), 5, np.uint8))
    with pytest.raises(OSError, match="simulated crash"):
        save_centroids(cen, torch.zeros(2, 3), torch.ones(2), "toy")
    monkeypatch.undo()
    assert torch.load(ckpt, weights_only=True)["global_step"] == 1
    assert (np.asarray(Image.open(pl)) == 3).all()
    assert load_centroids(cen, 2, 3).eq(1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["centroids.pt", "last.ckpt", "pl.png"]  # no temp left


WRITER = """
import sys, torch
from diga.utils.atomic_checkpoints import atomic_torch_save
path = sys.argv[1]
i = 0
print("ready", flush=True)
while True:
    i += 1
    atomic_torch_save({"i": i, "payload": torch.full((4_000_000,), float(i))}, path)
"""


def test_sigkill_during_writes_never_leaves_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"i": 0, "payload": torch.zeros(4_000_000)}, path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)  # several 16 MB writes are under way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = torch.load(path, weights_only=True)  # loads: either a complete old or a complete new checkpoint
    assert state["payload"].eq(float(state["i"])).all()
