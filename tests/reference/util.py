"""Numerical comparisons with the authors' code (DiGA, DAFormer, MIC, HRDA) on the same inputs.

Each test module marks itself `pytestmark = pytest.mark.reference`. The reference implementations are imported
from local checkouts, never from this repository: set `DIGA_REFERENCE_DIR` to a folder holding `DiGA/` (github
fy-vision/DiGA), `DAFormer/` (lhoyer/DAFormer), `MIC/` (lhoyer/MIC) and `HRDA/` (lhoyer/HRDA). Without it these
tests are skipped.
`make test-reference` runs them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest


def reference_checkout(name: str) -> Path:
    """The local checkout `DIGA_REFERENCE_DIR/<name>`, or skip the calling test."""
    root = os.environ.get("DIGA_REFERENCE_DIR")
    if not root or not (Path(root) / name).is_dir():
        pytest.skip(f"reference checkout {name!r} not available (set DIGA_REFERENCE_DIR)")
    return Path(root) / name


def load_module(path: Path, name: str, stubs: dict[str, types.ModuleType] | None = None) -> types.ModuleType:
    """Import one reference file as module `name`, with `stubs` standing in for packages it imports
    (e.g. mmcv) but that the compared function does not need. The stubs are removed again afterwards."""
    saved = {k: sys.modules.get(k) for k in (stubs or {})}
    sys.modules.update(stubs or {})
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
