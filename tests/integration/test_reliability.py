"""Reliability: non-finite losses stop the run and keep the last good checkpoint; same seed → same bits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diga.callbacks import NonFiniteLossError
from diga.callbacks.nan_guard import first_non_finite, newest_finite_checkpoint
from diga.modules.source_only import SourceOnlyModule
from diga.tasks import run_task
from tests.helpers import compose_cfg, tiny_toy_overrides


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path: Path, toy_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    real = SourceOnlyModule.supervised_loss

    def poisoned(self, *args, **kwargs):
        loss = real(self, *args, **kwargs)
        return loss * float("nan") if self.global_step >= 3 else loss

    monkeypatch.setattr(SourceOnlyModule, "supervised_loss", poisoned)
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=6), "stage=source_only", "ckpt_every=2"])
    with pytest.raises(NonFiniteLossError, match=r"at step 3.*last\.ckpt"):
        run_task(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_same_seed_gives_bit_identical_results(tmp_path: Path, toy_root: Path) -> None:
    states = []
    for run in ("a", "b"):
        cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=3), "stage=warmup",
                           "stage.module.translator.kind=fourier", f"paths.output_dir={tmp_path / run}"])  # fmt: skip
        run_task(cfg)
        states.append(torch.load(tmp_path / run / "final_model.pt", map_location="cpu", weights_only=True))
    for k, v in states[0]["state_dict"].items():
        assert torch.equal(v, states[1]["state_dict"][k]), k
    assert (tmp_path / "a" / "results.json").read_text() == (tmp_path / "b" / "results.json").read_text()


def test_corrupted_weights_are_never_checkpointed_and_the_named_checkpoint_resumes(
        tmp_path: Path, toy_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The loss is still finite when the weights go NaN (as after an Inf gradient): the guard must look at the
    weights, refuse to checkpoint them, and name a checkpoint from which a resumed run trains normally."""
    import pytorch_lightning as pl

    import diga.tasks.fit as fit

    class CorruptAfterStep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            if trainer.global_step == 3:
                with torch.no_grad():
                    next(pl_module.parameters()).fill_(float("nan"))

    original = fit.build_trainer
    monkeypatch.setattr(fit, "build_trainer", lambda cfg: _with(original(cfg), CorruptAfterStep()))
    base = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=6), "stage=source_only", "ckpt_every=2",
            "logger=none"]  # fmt: skip
    with pytest.raises(NonFiniteLossError) as err:
        run_task(compose_cfg(base))
    named = Path(str(err.value).rsplit("Last good checkpoint: ", 1)[1])
    assert named.is_file(), err.value
    kept = torch.load(named, map_location="cpu", weights_only=True)
    assert kept["global_step"] == 2
    for path in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):  # nothing with NaN weights reached the disk
        assert first_non_finite(torch.load(path, map_location="cpu", weights_only=True)) is None, path

    monkeypatch.setattr(fit, "build_trainer", original)
    run_task(compose_cfg([*base, f"ckpt_path={named}", "overwrite=true"]))  # the guard raises on a NaN loss
    final = torch.load(tmp_path / "run" / "final_model.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in final["state_dict"].values() if v.is_floating_point())


def test_newest_finite_checkpoint_skips_corrupted_and_unreadable_files(tmp_path: Path) -> None:
    good = {"global_step": 2, "state_dict": {"w": torch.ones(3)}, "optimizer_states": [{"state": {0: {
        "exp_avg": torch.zeros(3)}}}]}  # fmt: skip
    nan_weights = {"global_step": 4, "state_dict": {"w": torch.tensor([1.0, float("nan")])}}
    nan_moments = {"global_step": 6, "state_dict": {"w": torch.ones(3)},
                   "optimizer_states": [{"state": {0: {"exp_avg_sq": torch.tensor([float("inf")])}}}]}  # fmt: skip
    for name, obj in {"a.ckpt": good, "b.ckpt": nan_weights, "c.ckpt": nan_moments}.items():
        torch.save(obj, tmp_path / name)
    (tmp_path / "d.ckpt").write_bytes(b"truncated")
    assert first_non_finite(nan_weights) == "state_dict.w"
    assert first_non_finite(nan_moments) == "optimizer_states[0].state.0.exp_avg_sq"
    assert newest_finite_checkpoint(sorted(tmp_path.glob("*.ckpt"))) == tmp_path / "a.ckpt"


def _with(trainer, callback):
    trainer.callbacks.append(callback)
    return trainer


KILLER = """
import os, signal, sys
from pathlib import Path
import pytorch_lightning as pl
import diga.tasks.fit as fit
from diga.tasks import run_task
from tests.helpers import compose_cfg

class KillAt(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final checkpoint

original = fit.build_trainer
def with_killer(cfg):
    trainer = original(cfg)
    trainer.callbacks.append(KillAt())
    return trainer

fit.build_trainer = with_killer
run_task(compose_cfg(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["source_only", "warmup"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(stage: str, tmp_path: Path, toy_root: Path) -> None:
    import subprocess
    import sys

    base = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=7), f"stage={stage}", "ckpt_every=3", "logger=none"]
    base += ["stage.module.translator.kind=fourier"] if stage == "warmup" else []
    run_task(compose_cfg([*base, f"paths.output_dir={tmp_path / 'full'}"]))

    killed = [*base, f"paths.output_dir={tmp_path / 'killed'}"]
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", KILLER, "5", *killed], cwd=repo, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]  # really killed mid-run (an epoch holds 4 batches here)
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3
    run_task(compose_cfg([*killed, "ckpt_path=last"]))

    full = torch.load(tmp_path / "full" / "final_model.pt", map_location="cpu", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "killed" / "final_model.pt", map_location="cpu", weights_only=True)["state_dict"]
    for k, v in full.items():
        assert torch.equal(v, resumed[k]), k
    assert (tmp_path / "full" / "results.json").read_text() == (tmp_path / "killed" / "results.json").read_text()
