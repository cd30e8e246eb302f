"""What a user sees in a redirected run: step lines, no ANSI codes, no library chatter, where the outputs are."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.fakes import TINY_TOY

NOISE = ("Tip:", "litlogger", "limit_val_batches", "FLOPs", "Modules in", "TPU available", "LeafSpec",
         "logging interval", "Traceback", "Warning")  # fmt: skip


def test_redirected_run_prints_plain_steps_and_where_its_outputs_are(tmp_path: Path, toy_root: Path) -> None:
    spec = ",".join(f"{k}:{v}" for k, v in TINY_TOY.items())
    cmd = [sys.executable, "-m", "diga.train", "experiment=toy", "stage=warmup", "stage.module.translator.kind=fourier",
           f"toy_spec={{{spec}}}", f"paths.root_dir={tmp_path}", f"paths.data_dir={toy_root.parent}", "run_id=r",
           "steps.warmup=4", "val_every=4", "trainer.log_every_n_steps=2", "datamodule.crop_size=[32,32]",
           "datamodule.num_workers=0"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "\x1b[" not in out  # no ANSI escape codes in a file
    assert [n for n in NOISE if n in out] == [], out
    steps = re.findall(r"warmup step (\d+)/4 · loss [\d.]+", out)
    assert steps == ["2", "4"], out
    run_dir = tmp_path / "logs" / "train" / "toy" / "warmup" / "r"
    assert f"diga: warmup done; outputs in {run_dir}: results.csv, final_model.pt" in out
