"""Renamed command-line keys keep working, with one line naming the new spelling."""

from __future__ import annotations

import subprocess
import sys

import yaml

from diga.config.deprecations import rewrite_deprecated


def test_flat_model_options_are_rewritten_to_their_side() -> None:
    args, notices = rewrite_deprecated(["experiment=toy", "model.embed_dim=768", "+model.drop_path_rate=0.2",
                                        "model.backbone=mit_b2", "model.pretrained=null"])  # fmt: skip
    assert args == ["experiment=toy", "++model.head.embed_dim=768", "++model.backbone.drop_path_rate=0.2",
                    "model.backbone=mit_b2", "model.pretrained=null"]  # fmt: skip
    assert notices == ["diga: model.embed_dim is deprecated: use model.head.embed_dim=768",
                       "diga: model.drop_path_rate is deprecated: use model.backbone.drop_path_rate=0.2"]  # fmt: skip


def test_the_old_spelling_still_composes_on_the_command_line() -> None:
    command = [sys.executable, "-m", "diga.train", "experiment=gta2cs", "stage=warmup", "model.dropout=0.25", "--cfg",
               "job"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    cfg = yaml.safe_load(run.stdout)
    assert cfg["model"]["head"]["dropout"] == 0.25 and "dropout" not in cfg["model"]
    assert "diga: model.dropout is deprecated: use model.head.dropout=0.25" in run.stderr.splitlines()
