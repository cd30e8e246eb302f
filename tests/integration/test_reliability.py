"""Reliability: non-finite losses stop the run and keep the last good checkpoint; same seed → same bits."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from diga.callbacks import NonFiniteLossError
from diga.callbacks.nan_guard import first_non_finite, newest_finite_checkpoint
from diga.modules.source_only import SourceOnlyModule
from diga.tasks import run_task
from tests.helpers import TRAINING_STAGES, compose_cfg, tiny_toy_overrides, training_stage_overrides


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
    assert newest_finite_checkpoint(sorted(tmp_path.glob("*.ckpt")))[0] == tmp_path / "a.ckpt"


def _with(trainer, callback):
    trainer.callbacks.append(callback)
    return trainer


KILLER = """
import os, signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a shell (a pytest-xdist worker ignores it)
import pytorch_lightning as pl
import diga.tasks.fit as fit
from diga.tasks import run_task
from tests.helpers import compose_cfg

class KillAt(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == int(sys.argv[1]):
            os.kill(os.getpid(), int(sys.argv[2]))  # SIGKILL: no cleanup, no final checkpoint; SIGINT: Ctrl-C

original = fit.build_trainer
def with_killer(cfg):
    trainer = original(cfg)
    trainer.callbacks.append(KillAt())
    return trainer

fit.build_trainer = with_killer
run_task(compose_cfg(sys.argv[3:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "signum"), [("source_only", signal.SIGKILL), ("warmup", signal.SIGKILL),
                                               ("source_only", signal.SIGINT)])  # fmt: skip
def test_kill_or_ctrl_c_mid_epoch_then_resume_matches_uninterrupted(stage: str, signum: int, tmp_path: Path,
                                                                   toy_root: Path) -> None:  # fmt: skip
    import subprocess
    import sys

    base = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=7), f"stage={stage}", "ckpt_every=3",
            "trainer.log_every_n_steps=1"]  # fmt: skip
    base += ["stage.module.translator.kind=fourier"] if stage == "warmup" else []
    run_task(compose_cfg([*base, f"paths.output_dir={tmp_path / 'full'}"]))

    killed = [*base, f"paths.output_dir={tmp_path / 'killed'}"]
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # compared bit for bit with this process
    proc = subprocess.run([sys.executable, "-c", KILLER, "5", str(int(signum)), *killed], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    # really stopped mid-run (an epoch holds 4 batches here); Lightning ends a Ctrl-C with status 1
    assert proc.returncode == (-9 if signum == signal.SIGKILL else 1), proc.stderr[-2000:]
    last = torch.load(tmp_path / "killed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3
    run_task(compose_cfg([*killed, "ckpt_path=last"]))

    assert_same_run(tmp_path / "killed", tmp_path / "full")  # the rows logged after the checkpoint: once


# --- faults and bad inputs: a run never loses data and never reports a false success -----------------------------


class _SignalDuring(pl.Callback):
    """Sends `signum` to this process while the step that ends at global step `step` runs."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), self.signum)


def assert_same_run(resumed: Path, uninterrupted: Path) -> None:
    """Bit-identical final weights, the same results and the same CSV rows."""
    a, b = (torch.load(r / "final_model.pt", map_location="cpu", weights_only=True)["state_dict"]
            for r in (resumed, uninterrupted))  # fmt: skip
    for k, v in b.items():
        assert torch.equal(v, a[k]), k
    assert (resumed / "results.json").read_text() == (uninterrupted / "results.json").read_text()
    assert _csv_rows(resumed) == _csv_rows(uninterrupted)


def _csv_rows(run: Path) -> list[dict[str, str]]:
    """The metric rows of a run, without Lightning's epoch counter: diga's data order is a function of the step
    (one long epoch), and Lightning may count a resume from a mid-epoch checkpoint as a new epoch."""
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "epoch"} for row in csv.DictReader(f)]


def test_sigterm_checkpoints_the_step_and_the_resumed_run_matches_one_never_stopped(
        tmp_path: Path, toy_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """SIGTERM (preemption, `docker stop`) stops after the current step with a checkpoint of it — not a silent
    success; resuming gives the uninterrupted run's weights, results and every CSV row logged before the stop."""
    import diga.tasks.fit as fit
    from diga.callbacks.preemption import StageInterrupted

    base = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=7), "stage=source_only", "ckpt_every=3",
            "trainer.log_every_n_steps=1"]  # fmt: skip
    run_task(compose_cfg([*base, f"paths.output_dir={tmp_path / 'full'}"]))
    original = fit.build_trainer
    monkeypatch.setattr(fit, "build_trainer", lambda cfg: _with(original(cfg), _SignalDuring(5)))
    stopped = [*base, f"paths.output_dir={tmp_path / 'stopped'}"]
    with pytest.raises(StageInterrupted, match=r"after step 5.*last\.ckpt"):
        run_task(compose_cfg(stopped))
    last = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5
    assert len({r["step"] for r in _csv_rows(tmp_path / "stopped")}) == 5  # rows of steps 0–4 are on disk
    monkeypatch.setattr(fit, "build_trainer", original)
    run_task(compose_cfg([*stopped, "ckpt_path=last"]))

    assert_same_run(tmp_path / "stopped", tmp_path / "full")


SUBMITIT_JOB = """
import os, signal, sys
from pathlib import Path
import pytorch_lightning as pl
import diga.tasks.fit as fit

marks = Path(sys.argv[1])
# what submitit installs in a SLURM job: SIGUSR2 checkpoints and requeues, SIGTERM is logged and bypassed
signal.signal(signal.SIGUSR2, lambda s, f: (marks / "requeued").touch())
signal.signal(signal.SIGTERM, lambda s, f: (marks / "bypassed").touch())

class Preempt(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step in (2, 3):
            os.kill(os.getpid(), signal.SIGUSR2 if trainer.global_step == 2 else signal.SIGTERM)

original = fit.build_trainer
def build_trainer(cfg):
    trainer = original(cfg)
    trainer.callbacks.append(Preempt())
    return trainer
fit.build_trainer = build_trainer
sys.argv = ["diga.train", *sys.argv[2:]]
import runpy
runpy.run_module("diga.train", run_name="__main__")  # as `python -m diga.train`
"""


def test_sigterm_under_submitit_exits_143_with_a_resume_line_and_submitit_still_requeues(
        tmp_path: Path, toy_root: Path) -> None:  # fmt: skip
    import subprocess
    import sys

    overrides = [o for o in tiny_toy_overrides(tmp_path, toy_root.parent, steps=6) if "output_dir" not in o]
    run_dir = tmp_path / "job"
    env = {**os.environ, "SLURM_JOB_ID": "7", "SUBMITIT_EXECUTOR": "slurm", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "diga"}  # fmt: skip
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", SUBMITIT_JOB, str(tmp_path), *overrides, "stage=source_only",
                           "logger=none", f"hydra.run.dir={run_dir}"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert (tmp_path / "requeued").exists() and (tmp_path / "bypassed").exists()  # submitit's handlers still ran
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("diga: "))
    assert "stopped by SIGTERM after step 3" in line and "resume with: python -m diga.train" in line, line
    assert "ckpt_path=last" in line and f"hydra.run.dir={run_dir}" in line, line
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3


class _RunsCodeWhenLoaded:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


def test_resume_never_runs_code_from_a_checkpoint_file(tmp_path: Path, toy_root: Path) -> None:
    from diga.config.preflight import PreflightError

    marker, foreign = tmp_path / "code-ran", tmp_path / "downloaded.ckpt"
    torch.save({"global_step": 1, "state_dict": {}, "extra": _RunsCodeWhenLoaded(marker)}, foreign)
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only", f"ckpt_path={foreign}"])
    with pytest.raises(PreflightError, match=rf"{foreign}.*weights_only=True"):
        run_task(cfg)
    assert not marker.exists()


def test_a_damaged_last_checkpoint_is_named_and_the_newest_intact_one_resumes(
        tmp_path: Path, toy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from diga.config.preflight import PreflightError

    base = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=4), "stage=source_only", "ckpt_every=2",
            "trainer.log_every_n_steps=1"]  # fmt: skip
    run_task(compose_cfg(base))
    logged = _csv_rows(tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    last, intact = ckpts / "last.ckpt", ckpts / "step_000004.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut off by a full disk
    with pytest.raises(PreflightError, match=rf"{last} does not load.*step 4: ckpt_path={intact}"):
        run_task(compose_cfg([*base, f"ckpt_path={last}"]))
    run_task(compose_cfg([*base, "ckpt_path=last", "trainer.max_steps=6"]))
    assert f"{last} does not load" in capsys.readouterr().out
    resumed = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 6
    rows = _csv_rows(tmp_path / "run")  # the rows logged before the resume are kept (Lightning deletes them)
    assert [r for r in rows if int(r["step"]) < 4] == [r for r in logged if int(r["step"]) < 4]
    assert set(range(6)) <= {int(r["step"]) for r in rows}


def test_one_run_per_run_folder_and_the_refusal_names_the_holder(tmp_path: Path, toy_root: Path) -> None:
    from diga.config.preflight import PreflightError
    from diga.utils.run_lock import run_folder_lock

    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only", "logger=none"])
    with run_folder_lock(tmp_path / "run", "python -m diga.train run_id=same"):
        with pytest.raises(PreflightError, match=rf"in use by another diga run \(process {os.getpid()} .*run_id=same"):
            run_task(cfg)
        assert not (tmp_path / "run" / "checkpoints").exists()
    run_task(cfg)  # the lock went with its holder
    assert (tmp_path / "run" / "final_model.pt").is_file()


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
            for p in folder.rglob("*")}  # fmt: skip


def test_a_refused_rerun_leaves_the_run_folder_as_it_was(tmp_path: Path, toy_root: Path) -> None:
    import subprocess
    import sys

    overrides = [o for o in tiny_toy_overrides(tmp_path, toy_root.parent) if "output_dir" not in o]
    run_dir = tmp_path / "done"
    command = [sys.executable, "-m", "diga.train", *overrides, "stage=source_only", "logger=none",
               f"hydra.run.dir={run_dir}"]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "seed: 0" in (run_dir / ".hydra" / "config.yaml").read_text()
    before = _snapshot(run_dir)
    again = subprocess.run([*command, "seed=3"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "already holds a run" in again.stderr, again.stderr[-3000:]
    assert _snapshot(run_dir) == before


# 8 training crops of 32×64 against one validation image per batch: the training step, not validation, sets the peak
TRAINING_BOUND = ["datamodule.val_batch_size=1", "datamodule.crop_size=[32,64]",
                  "datamodule.source.loader.streams=[{resize:null,batch_size:8}]"]  # fmt: skip


def _free_memory_between(monkeypatch: pytest.MonkeyPatch, cfg_overrides: list[str], option: list[str]) -> None:
    """Pretend the machine has just enough memory for the stage with `option`, not without it (the estimate the run
    makes: the training step's, or a validation batch's where that is larger)."""
    from hydra.utils import instantiate

    import diga.utils.memory as memory
    from diga.tasks.fit import build_module, estimate_stage_memory

    def likely_peak(extra: list[str]) -> int:
        cfg = compose_cfg([*cfg_overrides, *extra])
        val_image = instantiate(cfg.datamodule, _recursive_=False).val_image_size()
        return estimate_stage_memory(cfg, build_module(cfg), val_image).likely_peak

    plain, lighter = likely_peak([]), likely_peak(option)
    assert lighter < plain
    monkeypatch.setattr(memory, "available_bytes", lambda: lighter)


def test_a_stage_too_big_for_the_free_memory_switches_on_checkpointing_instead_of_being_killed(
        tmp_path: Path, toy_root: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    overrides = [*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only", "logger=none", *TRAINING_BOUND]
    _free_memory_between(monkeypatch, overrides, ["model.grad_checkpointing=true"])
    run_task(compose_cfg(overrides))
    assert "training with model.grad_checkpointing=true instead" in capsys.readouterr().out
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["grad_checkpointing"] is True


def test_a_pipeline_step_that_cannot_fit_stops_with_overrides_that_work_in_a_pipeline(
        tmp_path: Path, toy_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import shlex

    import diga.utils.memory as memory
    from diga.tasks.memory_fit import MemoryShortError
    from diga.tasks.pipeline import step_configs
    from tests.helpers import tiny_pipeline_overrides

    overrides = [*tiny_toy_overrides(tmp_path, toy_root.parent), *tiny_pipeline_overrides(0), "logger=none",
                 *TRAINING_BOUND]  # fmt: skip
    monkeypatch.setattr(memory, "available_bytes", lambda: 1024**2)  # 1 MiB: nothing fits
    with pytest.raises(MemoryShortError, match="pipeline step source_only does not fit") as err:
        run_task(compose_cfg(overrides))
    suggested = str(err.value).split("(starting from ", 1)[1].split(") with ", 1)[0]
    assert "'++stage.step_overrides={source_only:[" in suggested
    typed = shlex.split(suggested)  # what bash passes on when the suggestion is pasted
    step_cfg = {s.name: c for s, c in step_configs(compose_cfg([*overrides, *typed]))}["source_only"]
    assert step_cfg.model.grad_checkpointing is True and step_cfg.stage.module.micro_batches in (2, 4, 8)


def test_a_finished_stage_leaves_nothing_alive_for_the_next_in_process_step(tmp_path: Path, toy_root: Path) -> None:
    """An in-process pipeline runs its steps one after another in one process: a step's model, trainer and data
    must be garbage once it returns, so that `release_memory` can give their memory back before the next one."""
    import gc

    from diga.utils.memory import release_memory

    def alive() -> set[int]:
        kinds = (pl.LightningModule, pl.Trainer, pl.LightningDataModule)
        return {id(o) for o in gc.get_objects() if isinstance(o, kinds)}

    before = alive()
    run_task(compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only"]))
    release_memory()
    assert alive() <= before


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.path,)


@pytest.mark.parametrize("reader", ["model.pretrained, model.weights, init_from", "evaluate, predict, export",
                                    "ckpt_path"])  # fmt: skip
def test_no_load_path_runs_code_from_a_file(reader: str, tmp_path: Path) -> None:
    """Every place diga opens a weight or checkpoint file refuses a pickle that would run code, naming the file."""
    from diga.config.preflight import PreflightError
    from diga.models.loading import load_segmentor
    from diga.models.weights import WeightFileError, read_state_dict

    def resume_from(path: Path) -> object:
        from diga.tasks.resume import resume_point

        return resume_point(str(path), tmp_path)

    marker, path = tmp_path / "code-ran", tmp_path / "file.pt"
    torch.save({"global_step": 1, "state_dict": {"w": torch.ones(1)}, "x": _Marker(marker)}, path)
    load = {"model.pretrained, model.weights, init_from": lambda: read_state_dict(path),  # one reader for all three
            "evaluate, predict, export": lambda: load_segmentor(path),
            "ckpt_path": lambda: resume_from(path)}[reader]  # fmt: skip
    with pytest.raises((WeightFileError, PreflightError), match=str(path)):
        load()
    assert not marker.exists()


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_every_training_stage_checkpoints_what_weights_only_loading_reads(
        stage: str, tmp_path: Path, toy_root: Path, selftrain_inputs: tuple[Path, Path]) -> None:  # fmt: skip
    """Resuming opens checkpoints with weights_only=True: what each stage saves (hparams, loop, callback and sampler
    state) must be tensors and plain containers only."""
    from diga.tasks.resume import checkpoint_problem

    run_task(compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent, steps=1), *training_stage_overrides(
        stage, selftrain_inputs), "logger=none", "val_every=100"]))  # fmt: skip
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint_problem(last) == (None, 1)
    assert torch.load(last, map_location="cpu", weights_only=True)["optimizer_states"]


@pytest.mark.slow
def test_sigterm_to_a_pipeline_reaches_its_isolated_step_and_the_pipeline_exits_143(
        tmp_path: Path, toy_root: Path) -> None:  # fmt: skip
    import subprocess
    import sys
    import time

    from tests.helpers import tiny_pipeline_overrides

    overrides = [o for o in tiny_toy_overrides(tmp_path, toy_root.parent, steps=400) if "output_dir" not in o]
    run = tmp_path / "pipeline"
    proc = subprocess.Popen([sys.executable, "-m", "diga.train", *overrides, *tiny_pipeline_overrides(0),
                             "stage.isolate_steps=true", "stage.translator=fourier", "trainer.log_every_n_steps=1",
                             f"hydra.run.dir={run}"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = run / "00_source_only" / "csv" / "metrics.csv"
    deadline = time.monotonic() + 300
    while not metrics.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)  # the step trains (Lightning's SIGTERM handling is in place) once it logs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 143, err[-3000:]
    assert (run / "00_source_only" / "checkpoints" / "last.ckpt").is_file()
    assert "stopped by SIGTERM" in err and f"resume with: python -m diga.train hydra.run.dir={run}" in err, err[-3000:]
