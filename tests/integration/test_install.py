"""The wheel carries the config tree: install it (not editable) into a fresh folder and run a tiny job from elsewhere,
with a user's own experiment found through Hydra's config search path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import TINY_TOY

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_runs_a_job_from_another_directory(tmp_path: Path, toy_root: Path) -> None:
    wheels, target, work, user_conf = tmp_path / "wheels", tmp_path / "site", tmp_path / "work", tmp_path / "my_conf"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(REPO)], check=True, cwd=tmp_path, capture_output=True)  # fmt: skip
    wheel = next(wheels.glob("diga-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    (user_conf / "experiment").mkdir(parents=True)
    (user_conf / "experiment" / "my_toy.yaml").write_text(
        "# @package _global_\ndefaults:\n  - toy\n  - _self_\nexperiment_name: my_toy\n"
    )
    work.mkdir()
    spec = ",".join(f"{k}:{v}" for k, v in TINY_TOY.items())
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy, ahead of the checkout
    cmd = [sys.executable, "-m", "diga.train", f"hydra.searchpath=[file://{user_conf}]", "experiment=my_toy",
           "stage=source_only", f"paths.data_dir={toy_root.parent}", f"toy_spec={{{spec}}}", "trainer.max_steps=1",
           "val_every=1", "ckpt_every=1", "datamodule.crop_size=[32,32]", "datamodule.num_workers=0",
           "datamodule.source.loader.streams=[{resize:null,batch_size:2}]", "logger=none", "run_id=wheel",
           "trainer.enable_progress_bar=false"]  # fmt: skip
    probe = subprocess.run([sys.executable, "-c", "import diga; print(diga.__file__)"], env=env, cwd=work,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert probe.stdout.strip().startswith(str(target)), probe.stdout
    proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "logs" / "train" / "my_toy" / "source_only" / "wheel" / "final_model.pt").is_file()


def test_another_checkouts_conf_is_named_not_silently_ignored(tmp_path: Path) -> None:
    from diga.config.compose import config_notice

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "train.yaml").write_text("{}\n")
    notice = config_notice(tmp_path)
    assert notice is not None and "using the configs of the imported diga package" in notice
    assert config_notice(REPO) is None  # in this checkout its own conf/ is the package's


def test_pipeline_sub_stages_keep_the_users_config_search_path(tmp_path: Path) -> None:
    """`stage=pipeline` recomposes every step: a user's experiment folder must stay on the search path."""
    from diga.config import compose_config
    from diga.tasks.pipeline import step_configs

    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "my_toy.yaml").write_text(
        "# @package _global_\ndefaults:\n  - toy\n  - _self_\nexperiment_name: my_toy\n"
    )
    cfg = compose_config([f"hydra.searchpath=[file://{tmp_path}]", "experiment=my_toy", "stage=pipeline",
                          f"paths.root_dir={tmp_path / 'logs'}", f"paths.output_dir={tmp_path / 'run'}"])  # fmt: skip
    steps = step_configs(cfg)
    assert len(steps) > 3 and all(c.experiment_name == "my_toy" for _, c in steps)
