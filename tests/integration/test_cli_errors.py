"""A user error given to a command (a missing file, a bad path or size) is one `diga:` line naming it (exit 2), not a
stack trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_predict_with_a_missing_checkpoint_names_it(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    proc = _run("diga.predict", f"ckpt={tmp_path / 'nope.pt'}", f"input={tmp_path / 'images'}",
                f"output={tmp_path / 'out'}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"diga: {tmp_path / 'nope.pt'}" in proc.stderr and "Traceback" not in proc.stderr


def test_check_data_with_a_missing_dataset_root_names_it(tmp_path: Path) -> None:
    proc = _run("diga.check_data", "experiment=gta2cs", f"paths.data_dir={tmp_path / 'data'}",
                f"paths.root_dir={tmp_path}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "GTA5" in proc.stderr and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_into_its_own_input_folder_is_refused_up_front(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 32)).save(tmp_path / "images" / "a.png")
    proc = _run("diga.predict", f"ckpt={tmp_path / 'nope.pt'}", f"input={tmp_path / 'images'}",
                f"output={tmp_path / 'images'}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"diga: output={tmp_path / 'images'}") and "Traceback" not in proc.stderr
    assert f"must not be input={tmp_path / 'images'} or a folder inside it" in proc.stderr


def test_export_too_small_names_height_and_width(tmp_path: Path, trained_toy_run: Path) -> None:
    proc = _run("diga.export", f"ckpt={trained_toy_run / 'final_model.pt'}", f"output={tmp_path / 'm.onnx'}",
                "height=8", "width=8", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("diga: height=8 width=8: 8×8 is too small") and "Traceback" not in proc.stderr
    assert "at least 32 pixels" in proc.stderr and not (tmp_path / "m.onnx").exists()
