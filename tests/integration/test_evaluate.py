"""`diga.evaluate` on a validation set: progress lines while it runs (minutes per split on a CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import compose_cfg


def test_evaluate_shows_progress(tmp_path: Path, toy_root: Path, trained_toy_run: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    from diga.evaluate import run_evaluate

    cfg = compose_cfg([f"ckpt={trained_toy_run / 'final_model.pt'}", "data=toy", f"paths.data_dir={toy_root.parent}",
                       f"output_dir={tmp_path}", "inference=whole", "num_workers=0",
                       "+data.spec={height:32,width:64,source_train:8,source_val:4,target_train:8,target_val:4}"],
                      config_name="evaluate")  # fmt: skip
    with caplog.at_level("INFO", logger="diga"):
        run_evaluate(cfg)
    assert "evaluating: 4/4" in caplog.text  # the progress helper's line when the output is not a terminal
