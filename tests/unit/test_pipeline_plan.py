"""The pipeline's plan is a pure function of the config: which steps, where, wired to which earlier outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from diga.tasks.pipeline_plan import plan, step_key, step_overrides
from tests.helpers import compose_cfg


def _plan(tmp_path: Path, *overrides: str, base: list[str] | None = None):
    cfg = compose_cfg(["experiment=toy", "stage=pipeline", f"paths.output_dir={tmp_path}", *overrides])
    return plan(cfg, tmp_path, base)


def test_diga_runs_every_step_in_order_each_in_its_numbered_directory(tmp_path: Path) -> None:
    steps = _plan(tmp_path, "stage.refine_rounds=1")
    assert [s.name for s in steps] == ["source_only", "translator", "warmup", "pseudolabel", "centroids", "selftrain",
                                       "pseudolabel_r2", "selftrain_r2", "target_supervised"]  # fmt: skip
    assert [s.out.root for s in steps] == [tmp_path / f"{i:02d}_{s.name}" for i, s in enumerate(steps)]
    assert [s.row for s in steps if s.row] == ["source-only", "warm-up", "self-training", "refinement 1",
                                               "target-supervised (upper bound)"]  # fmt: skip
    assert steps[-1].oracle and not any(s.oracle for s in steps[:-1])


def test_each_step_reads_what_the_steps_before_it_wrote(tmp_path: Path) -> None:
    by = {s.name: s for s in _plan(tmp_path, "stage.refine_rounds=1")}
    assert f"stage.module.translator.checkpoint={by['translator'].out.translator}" in by["warmup"].overrides
    assert f"stage.init_from={by['warmup'].out.final_model}" in by["pseudolabel"].overrides
    selftrain = by["selftrain"].overrides
    assert f"stage.pseudo_labels={by['pseudolabel'].out.pseudo_labels}" in selftrain
    assert f"stage.centroids={by['centroids'].out.centroids}" in selftrain
    assert f"stage.init_from={by['selftrain'].out.final_model}" in by["pseudolabel_r2"].overrides
    assert f"stage.centroids={by['centroids'].out.centroids}" in by["selftrain_r2"].overrides  # the authors reuse them


def test_baselines_and_domain_generalisation_plan_fewer_steps(tmp_path: Path) -> None:
    assert [s.name for s in _plan(tmp_path, "stage.method=daformer")] == ["source_only", "daformer",
                                                                           "target_supervised"]  # fmt: skip
    dg = [s.name for s in _plan(tmp_path, "stage.adaptation=false", "stage.translator=fourier", "stage.oracle=false")]
    assert dg == ["source_only", "warmup"]


def test_content_keys_follow_the_computation_not_the_run(tmp_path: Path) -> None:
    a = _plan(tmp_path / "a", base=["seed=0", "run_id=first"])
    b = _plan(tmp_path / "b", base=["seed=0", "run_id=second"])  # another run of the same computation
    c = _plan(tmp_path / "c", base=["seed=1"])
    assert [s.key for s in a] == [s.key for s in b]
    assert all(x.key != y.key for x, y in zip(a, c))
    assert step_key("warmup", ["x=1"], [], False) != step_key("warmup", ["x=1"], [], True)


def test_cached_steps_live_under_their_key_and_are_linked_into_the_run(tmp_path: Path) -> None:
    steps = _plan(tmp_path / "run", f"stage.step_cache={tmp_path / 'cache'}")
    for i, s in enumerate(steps):
        assert s.out.root == tmp_path / "cache" / f"{s.name}-{s.key}"
        assert s.link == tmp_path / "run" / f"{i:02d}_{s.name}"


def test_a_relative_step_cache_links_resolve_from_the_run_directory(tmp_path: Path, monkeypatch) -> None:
    """`stage.step_cache=logs/cache` (relative to the working directory): the run's links must still reach the cache
    entry, and a resumed run finds its own links (an older diga wrote them dangling; those are replaced)."""
    from diga.tasks.step_cache import link_into_run

    monkeypatch.chdir(tmp_path)
    steps = _plan(Path("logs/run"), "stage.step_cache=logs/cache")
    first = steps[0]
    first.link.parent.mkdir(parents=True)
    first.link.symlink_to(first.out.root, target_is_directory=True)  # relative to the cwd: dangling
    for step in steps:
        link_into_run(step)
        link_into_run(step)  # the resumed run
        assert step.link.resolve() == step.out.root.resolve()
    (tmp_path / "logs/run/elsewhere").mkdir()
    steps[1].link.unlink()
    steps[1].link.symlink_to("elsewhere")
    with pytest.raises(FileExistsError, match="not a link to the step cache entry"):
        link_into_run(steps[1])


def test_a_steps_command_line_names_its_stage_directory_and_pipeline_step(tmp_path: Path) -> None:
    warmup = next(s for s in _plan(tmp_path) if s.name == "warmup")
    line = step_overrides(warmup, ["experiment=toy"], ["trainer.max_steps=3"])
    assert line[:2] == ["experiment=toy", "stage=warmup"]
    assert line[-3:] == ["trainer.max_steps=3", f"paths.output_dir={warmup.out.root}", "pipeline_step=warmup"]


def test_step_overrides_under_star_reach_every_step_before_its_own(tmp_path: Path) -> None:
    """`stage.step_overrides` `"*"` (an ablation row that switches every step, e.g. to another experiment) goes to
    every step, ahead of the step's own overrides, and into every step's content key."""
    from diga.tasks.pipeline_plan import extra_overrides

    per_step = {"*": ["experiment=toy_hr_hrda"], "warmup": ["stage.module.kd_weight=0.5"]}
    assert extra_overrides(per_step, "warmup", "warmup") == ["experiment=toy_hr_hrda", "stage.module.kd_weight=0.5"]
    assert extra_overrides(per_step, "selftrain_r1", "selftrain") == ["experiment=toy_hr_hrda"]
    assert extra_overrides({}, "warmup", "warmup") == []
    cfg = compose_cfg(["experiment=toy", "stage=pipeline", f"paths.output_dir={tmp_path}"])
    plain = plan(cfg, tmp_path / "a", [])
    switched = plan(cfg, tmp_path / "b", [], per_step)
    assert [s.name for s in plain] == [s.name for s in switched]
    assert all(p.key != s.key for p, s in zip(plain, switched))


def test_a_changed_dataset_default_changes_every_step_key(tmp_path: Path) -> None:
    """The toy's default generator moved from v1 to v2 with the same command line: a step cached on v1 data must not
    stand in for a v2 step."""
    cfg = compose_cfg(["experiment=toy", "stage=pipeline", "stage.step_cache=cache", f"paths.output_dir={tmp_path}"])
    v2 = [s.key for s in plan(cfg, tmp_path, [])]
    for slot in (cfg.datamodule.source, cfg.datamodule.target, cfg.datamodule.val.toy_target):
        slot.spec.version = 1
    v1 = [s.key for s in plan(cfg, tmp_path, [])]
    assert len(v1) == len(v2) and not set(v1) & set(v2)
