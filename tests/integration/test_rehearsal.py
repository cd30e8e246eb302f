"""The rehearsal at 1/8 of the real image sizes: every real experiment's pipeline runs end to end on fake data in the
official layouts (`make rehearsal` is the full-size version)."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.fake_weights import write_weights
from benchmarks.rehearsal import BASELINES, report, run_pipeline

from diga.data.fake_trees import write_street_trees

STEPS = {
    "gta2cs": ["source_only", "translator", "warmup", "pseudolabel", "centroids", "selftrain", "pseudolabel_r2",
               "selftrain_r2", "target_supervised"],
    # the refinement round and the upper bound run gta2cs's code on the same Cityscapes target (see WITHOUT_REPEATS)
    "synthia2cs": ["source_only", "translator", "warmup", "pseudolabel", "centroids", "selftrain"],
    "gta_dg": ["source_only", "warmup"],
    "cs_semi": ["source_only", "warmup", "pseudolabel", "centroids", "selftrain"],
    # the MIC baselines: one adaptation stage (RCS, feature distance, masked consistency at real sizes). MIC runs
    # every part of DAFormer's stage and masks on top, and the `_daformer` recipes differ from `_mic` only in that
    # weight (the config tests check it), so here MIC stands for both; `make rehearsal` runs all four
    **{name: ["source_only", "daformer"] for name in BASELINES if name.endswith("_mic")},
    # MIC on HRDA's multi-resolution model: the detail window, batched sliding validation, pseudo-label margins
    "gta2cs_mic_hrda": ["source_only", "daformer", "target_supervised"],
    # Cityscapes as the source, ACDC's official tree as the target, its validation pooled and per condition
    "cs2acdc_mic": ["source_only", "daformer", "target_supervised"],
}  # fmt: skip
# steps that only repeat what gta2cs rehearses: a refinement round is the first round's steps again, and the upper
# bound of these trains the model on the Cityscapes labels that gta2cs's does (`make rehearsal` runs them all)
WITHOUT_REPEATS = {"synthia2cs": ["stage.refine_rounds=0", "stage.oracle=false"],
                   "cs_semi": ["stage.refine_rounds=0", "stage.oracle=false"],
                   **{name: ["stage.oracle=false"] for name in BASELINES if name.endswith("_mic")}}  # fmt: skip
EVALUATED = {
    "gta_dg": {"cityscapes", "bdd100k", "mapillary", "synthia", "mean_real"},
    "cs2acdc_mic": {"acdc", "acdc_fog", "acdc_night", "acdc_rain", "acdc_snow"},
}


@pytest.fixture(scope="module")
def rehearsal_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Path]]:
    work = tmp_path_factory.mktemp("rehearsal")
    return work, write_street_trees(work / "data", 0.125)["gta5"].parent, write_weights(work / "weights")


@pytest.mark.slow(seconds=60)
@pytest.mark.parametrize("experiment", sorted(STEPS))
def test_real_experiment_pipeline_runs_at_reduced_size(experiment: str, rehearsal_inputs) -> None:
    work, data, weights = rehearsal_inputs
    res = run_pipeline(experiment, work, data, weights, steps=1, scale=0.125, isolate=False,
                       extra=WITHOUT_REPEATS.get(experiment), in_this_process=True)  # fmt: skip
    assert res["returncode"] == 0, res.get("error")
    assert list(res["steps"]) == STEPS[experiment]
    results = {name: r for step in res["steps"].values() for name, r in step["results"].items()}
    assert set(results) == EVALUATED.get(experiment, {"cityscapes"})
    if experiment.startswith("synthia2cs"):
        assert "mIoU13" in results["cityscapes"]  # SYNTHIA's 16- and 13-class means
    # the profile of every training step: forward, backward and optimiser time, shown in the printed table
    assert "training steps › backward" in res["steps"]["source_only"]["phases"]
    assert "(forward and losses " in report(res)
    run = Path(res["run_dir"])
    if experiment in ("gta2cs", "synthia2cs"):
        assert (run / "01_translator" / "translator.pt").is_file()  # the learned translator, not a training-free one
    if experiment == "cs_semi":  # the unlabeled part only is pseudo-labelled: 30 of the 32 fake train images
        (pseudo_labels,) = run.glob("*_pseudolabel/pseudo_labels")  # no translator step: the folder is 02_…
        assert len(list(pseudo_labels.glob("*.png"))) == 30
