"""Hydra multirun sweeps from the command line, and the SLURM launcher config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import compose_cfg, tiny_toy_overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_multirun_sweep_runs_every_point(tmp_path: Path, toy_root: Path) -> None:
    overrides = [o for o in tiny_toy_overrides(tmp_path, toy_root.parent) if not o.startswith("paths.output_dir")]
    cmd = [sys.executable, "-m", "diga.train", "-m", *overrides, "stage=source_only", "seed=0,1", "run_id=sweep",
           "logger=csv"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "logs" / "train" / "toy" / "multirun" / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    for j in jobs:
        assert json.loads((sweep / j / "results.json").read_text())["toy_target"]["mIoU"] >= 0
        assert (sweep / j / "checkpoints" / "last.ckpt").is_file()  # deterministic, requeue-safe location


def test_slurm_launcher_config_composes(tmp_path: Path) -> None:
    cfg = compose_cfg(["hydra/launcher=slurm", "experiment=gta2cs", "trainer=ddp", "trainer.devices=4",
                       f"paths.output_dir={tmp_path}"])  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4 and launcher.max_num_timeout > 0
