"""The demo notebook executes top to bottom (at tiny size)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "demo.ipynb"


@pytest.mark.slow(seconds=35)
def test_demo_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGA_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("DIGA_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "self-training" in outputs and "kept" in outputs
    assert (tmp_path / "run" / "pipeline_results.png").is_file()
    assert os.environ["DIGA_NOTEBOOK_TINY"] == "1"
