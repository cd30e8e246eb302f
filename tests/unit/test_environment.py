"""env.json: what a run ran with, and the signature that decides whether two CPU runs can agree to the digit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from diga.utils import environment


def test_record_names_versions_lock_git_and_kernel_path() -> None:
    env = environment.collect()
    import torch

    assert env["torch"]["torch"] == torch.__version__
    assert env["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch"]["threads"] == torch.get_num_threads()
    assert env["packages"]["omegaconf"]
    root = environment.repository_root()
    if root is not None and (root / ".git").exists():
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert env["git"]["commit"] == head.strip()
        assert isinstance(env["git"]["dirty"], bool)
    if env["lock"]["file"] is not None:
        assert len(env["lock"]["sha256"]) == 64


def test_lock_differences_are_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "lock-x86_64.txt"
    lock.write_text("# header\nomegaconf==0.0.1\nnot-installed-pkg==1.0 ; sys_platform == 'linux'\n")
    monkeypatch.setattr(environment, "lock_file", lambda: lock)
    status = environment.lock_status(environment.installed_packages())
    assert status["differs"]["omegaconf"]["locked"] == "0.0.1"
    assert status["differs"]["not-installed-pkg"] == {"locked": "1.0", "installed": None}


def test_kernel_signature_moves_with_what_selects_kernels_only() -> None:
    env = environment.collect()
    same = {**env, "cpu": "another brand name", "platform": "another kernel"}
    assert environment.kernel_signature(same) == env["kernel_signature"]
    threads = {**env, "torch": {**env["torch"], "threads": env["torch"]["threads"] + 1}}
    isa = {**env, "torch": {**env["torch"], "cpu_capability": "DEFAULT"}}
    variables = {**env, "variables": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
    signatures = {environment.kernel_signature(e) for e in (threads, isa, variables)}
    assert env["kernel_signature"] not in signatures and len(signatures) == 3


def test_portable_config_hash_ignores_paths_and_run_id() -> None:
    a = OmegaConf.create({"lr": 1e-4, "paths": {"output_dir": "/a"}, "run_id": "a", "stage": {"name": "warmup"}})
    b = OmegaConf.create({"lr": 1e-4, "paths": {"output_dir": "/b"}, "run_id": "b", "stage": {"name": "warmup"}})
    c = OmegaConf.create({"lr": 2e-4, "paths": {"output_dir": "/a"}, "run_id": "a", "stage": {"name": "warmup"}})
    ha, hb, hc = (environment.config_hashes(x) for x in (a, b, c))
    assert ha["config_sha256_portable"] == hb["config_sha256_portable"] != hc["config_sha256_portable"]
    assert ha["config_sha256"] != hb["config_sha256"]


def test_cli_prints_a_summary_and_the_full_record() -> None:
    out = subprocess.run([sys.executable, "-m", "diga.env"], capture_output=True, text=True, check=True).stdout
    assert "torch" in out and "kernel signature" in out
    full = subprocess.run([sys.executable, "-m", "diga.env", "--json"], capture_output=True, text=True, check=True)
    import json

    assert "packages" in json.loads(full.stdout)
