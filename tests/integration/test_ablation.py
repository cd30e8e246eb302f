"""The ablation sweep at tiny size: a Hydra multirun over rows × seeds with shared steps, then the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_pipeline_overrides, tiny_toy_overrides


@pytest.mark.slow(seconds=55)
def test_ablation_sweep_and_table(tmp_path: Path, toy_root: Path) -> None:
    from diga.ablation import write

    base = [o for o in tiny_toy_overrides(tmp_path, toy_root.parent) if not o.startswith("paths.output_dir")]
    pipe = [o for o in tiny_pipeline_overrides(refine_rounds=0) if not o.startswith("stage.refine_rounds")]
    cmd = [sys.executable, "-m", "diga.train", "-m", *base, *pipe, "ablation=st_offline,st_centroid", "seed=0,1",
           "run_id=abl", f"stage.step_cache={tmp_path}/cache", "logger=none"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "logs" / "train" / "toy" / "multirun" / "abl"
    rows = write(sweep)
    assert set(rows) == {"self-training: offline pseudo-labels only", "self-training: nearest-centroid labels only"}
    assert all(set(r["seeds"]) == {0, 1} for r in rows.values())
    assert (sweep / "ablation.md").read_text().count("±") == 3  # header + 2 rows
    assert (sweep / "ablation.png").is_file() and (sweep / "ablation_per_class.csv").is_file()
    # the two rows of a seed share translator, warm-up, pseudo-labels and centroids: 4 + 2 self-trainings in all
    assert len(list((tmp_path / "cache").glob("warmup-*"))) == 2  # one per seed
    assert len(list((tmp_path / "cache").glob("selftrain-*"))) == 4
