"""Values that are well typed and still cannot work are refused before anything is built, naming the key typed.

`steps.<stage>=-1` becomes `trainer.max_steps=-1`, Lightning's "no limit"; a stream of `batch_size: 0` fails inside
torch's DataLoader; a stream override that bash's brace expansion split in two arrives as a list of strings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diga.config.preflight import PreflightError
from diga.tasks import check_run
from tests.helpers import compose_cfg


def _refusal(tmp_path: Path, *overrides: str, stage: str = "source_only") -> str:
    cfg = compose_cfg(["experiment=toy", f"stage={stage}", f"paths.output_dir={tmp_path}", *overrides])
    with pytest.raises(PreflightError) as err:
        check_run(cfg)
    return str(err.value)


@pytest.mark.parametrize("steps", ["-1", "0"])
def test_a_step_budget_below_one_is_named_by_its_key(tmp_path: Path, steps: str) -> None:
    msg = _refusal(tmp_path, f"steps.source_only={steps}")
    assert msg.startswith("1 value(s) out of range:"), msg
    assert f"steps.source_only must be a positive number of training steps, got {steps}" in msg


def test_a_direct_max_steps_is_named_as_typed(tmp_path: Path) -> None:
    msg = _refusal(tmp_path, "trainer.max_steps=-1")
    assert "trainer.max_steps must be a positive number of training steps, got -1" in msg, msg


def test_a_pipeline_checks_the_configs_of_its_steps(tmp_path: Path) -> None:
    msg = _refusal(tmp_path, "steps.selftrain=0", "++stage.step_overrides={warmup:['trainer.max_steps=-5']}",
                   stage="pipeline")  # fmt: skip
    assert msg.startswith("2 value(s) out of range:"), msg
    assert "steps.selftrain must be a positive number of training steps, got 0" in msg
    assert "trainer.max_steps must be a positive number of training steps, got -5" in msg


def test_intervals_must_be_positive_where_zero_cannot_mean_never(tmp_path: Path) -> None:
    msg = _refusal(tmp_path, "val_every=0", "ckpt_every=-1", "trainer.log_every_n_steps=-1", "log_images_every=0")
    assert msg.startswith("3 value(s) out of range:"), msg
    assert "val_every must be a positive number of training steps, got 0" in msg
    assert "ckpt_every must be a positive number of training steps, got -1" in msg
    assert "trainer.log_every_n_steps must be 0 (never) or a positive number of training steps, got -1" in msg


def test_batch_sizes_below_one_are_named_by_their_key(tmp_path: Path) -> None:
    msg = _refusal(tmp_path, "datamodule.source.loader.streams=[{resize:null,batch_size:2},{resize:64,batch_size:0}]",
                   "datamodule.val_batch_size=0")  # fmt: skip
    assert msg.startswith("2 value(s) out of range:"), msg
    assert "datamodule.source.loader.streams[1].batch_size must be a positive integer, got 0" in msg
    assert "datamodule.val_batch_size must be a positive integer, got 0" in msg


def test_a_stream_split_by_brace_expansion_asks_for_quotes(tmp_path: Path) -> None:
    # what bash passes for an unquoted datamodule.source.loader.streams=[{resize:null,batch_size:2}]
    msg = _refusal(tmp_path, "datamodule.source.loader.streams=[resize:null]",
                   "datamodule.source.loader.streams=[batch_size:2]")  # fmt: skip
    assert msg.startswith("1 value(s) of the wrong type:"), msg
    assert "datamodule.source.loader.streams[0]='batch_size:2': expected a mapping" in msg
    assert "lost its braces to the shell" in msg
    assert "'datamodule.source.loader.streams=[{resize:null,batch_size:2}]'" in msg


def test_streams_that_are_not_a_list_are_refused(tmp_path: Path) -> None:
    msg = _refusal(tmp_path, "datamodule.target.loader.streams=abc", "datamodule.source.loader.streams=[2]")
    assert "datamodule.target.loader.streams='abc': expected a list of streams such as [{resize:null," in msg, msg
    assert "datamodule.source.loader.streams[0]=2: expected a mapping such as {resize:null,batch_size:2}" in msg


def test_shipped_stages_pass_the_value_check(tmp_path: Path) -> None:
    from diga.config.value_checks import value_problems

    for stage in ("source_only", "translator", "warmup", "pseudolabel", "centroids", "selftrain", "daformer"):
        for experiment in ("toy", "gta2cs"):
            cfg = compose_cfg([f"experiment={experiment}", f"stage={stage}", f"paths.output_dir={tmp_path}"])
            assert value_problems(cfg) == [], (experiment, stage)


def test_a_pseudo_label_batch_below_one_is_named(tmp_path: Path) -> None:
    msg = _refusal(tmp_path, "stage.batch_size=0", "stage.init_from=x", stage="pseudolabel")
    assert "stage.batch_size must be a positive integer, got 0" in msg, msg


def test_a_mean_over_a_set_the_run_does_not_validate_on_is_refused(tmp_path: Path) -> None:
    """`report_means` with a misspelt set would silently leave the mean out of every table."""
    msg = _refusal(tmp_path, "+report_means.both=[toy_target,toy_tgt]")
    assert "report_means.both names 'toy_tgt', not validation sets of this run (datamodule.val: " in msg


def test_a_stage_that_reads_target_images_needs_a_target_domain(tmp_path: Path) -> None:
    """Domain generalisation has no target slot: pseudo-labelling it is named as the problem, before any work."""
    cfg = compose_cfg(["experiment=gta_dg", "stage=pseudolabel", f"paths.output_dir={tmp_path}",
                       "stage.init_from=/nowhere/final_model.pt"])  # fmt: skip
    with pytest.raises(PreflightError, match="stage pseudolabel reads target images, and experiment gta_dg has no"):
        check_run(cfg)


@pytest.mark.parametrize(("override", "expected"), [
    ("+report_pooled.toy_target=[toy_target]", "report_pooled.toy_target: the name of a set it would replace"),
    ("+report_pooled.none=[]", "report_pooled.none names no validation set"),
    ("+report_means.toy_target=[toy_target]", "report_means.toy_target: the name of a set it would replace"),
])  # fmt: skip
def test_a_pooled_set_or_mean_that_would_replace_a_set_or_pool_nothing_is_refused(tmp_path: Path, override: str,
                                                                                  expected: str) -> None:  # fmt: skip
    assert expected in _refusal(tmp_path, override)
