"""A 2-step source-only run on the toy data: checkpoints, exported model, results, resume, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diga.tasks import run_task
from tests.helpers import compose_cfg, tiny_toy_overrides


def test_two_step_source_only_run_reports_target_miou(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only"])
    metrics = run_task(cfg)
    run = tmp_path / "run"
    assert 0.0 <= metrics["mIoU"] <= 100.0
    results = json.loads((run / "results.json").read_text())
    assert results["toy_target"]["mIoU"] == pytest.approx(metrics["mIoU"])
    assert set(results["toy_target"]) >= {"iou/road", "iou/person", "aAcc"}
    assert (run / "results.csv").read_text().startswith("metric,toy_target")
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # loadable under torch's safe default
    assert state["global_step"] == 2 and state["hyper_parameters"]["label_set"] == "toy"
    exported = torch.load(run / "final_model.pt", map_location="cpu", weights_only=True)
    assert exported["model_cfg"]["backbone"]["name"] == "mit_b0"
    env = json.loads((run / "env.json").read_text())  # what produced these numbers, referenced by results.json
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or env["torch"]["torch"] == torch.__version__
    assert results["provenance"]["env"] == "env.json"
    assert results["provenance"]["kernel_signature"] == env["kernel_signature"]
    assert results["provenance"]["config_sha256_portable"] == env["config_sha256_portable"]


def test_runs_without_any_logger(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only", "logger=none"])
    metrics = run_task(cfg)
    assert 0 <= metrics["mIoU"] <= 100


def test_resume_continues_from_checkpoint(tmp_path: Path, toy_root: Path) -> None:
    base = [*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only"]
    run_task(compose_cfg(base))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = compose_cfg([*base, "trainer.max_steps=4", "ckpt_path=last"])
    run_task(cfg)
    second = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert first["global_step"] == 2 and second["global_step"] == 4
    # a missing explicit checkpoint is an error, not a silent fresh start
    from diga.config.preflight import PreflightError

    with pytest.raises(PreflightError, match=r"nope\.ckpt: checkpoint to resume from does not exist"):
        run_task(compose_cfg([*base, f"ckpt_path={tmp_path}/nope.ckpt"]))


def test_evaluate_checkpoint(tmp_path: Path, toy_root: Path, trained_toy_run: Path) -> None:
    from diga.evaluate import run_evaluate

    for name in ("checkpoints/last.ckpt", "final_model.pt"):
        out = tmp_path / f"eval_{Path(name).stem}"
        cfg = compose_cfg([f"ckpt={trained_toy_run / name}", "data=toy", f"paths.data_dir={toy_root.parent}",
                           f"output_dir={out}", "inference.scales=[1.0,2.0]", "num_workers=0",
                           "+data.spec={height:32,width:64,source_train:8,source_val:4,target_train:8,target_val:4}"],
                          config_name="evaluate")  # fmt: skip
        summary = run_evaluate(cfg)
        assert 0 <= summary["mIoU"] <= 100
        assert (out / "eval_toy_val.csv").is_file() or list(out.glob("eval_*.csv"))


def test_evaluate_says_the_model_comes_from_the_checkpoint(tmp_path: Path) -> None:
    import subprocess
    import sys

    for args, expected in ((["model=segformer_b0"], "takes the model from its checkpoint"),
                           ([], "nope.pt: checkpoint not found")):  # fmt: skip
        cmd = [sys.executable, "-m", "diga.evaluate", f"ckpt={tmp_path}/nope.pt", *args, f"hydra.run.dir={tmp_path}/h"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("diga: ") and expected in proc.stderr and "Traceback" not in proc.stderr


def test_incompatible_checkpoint_for_evaluation(tmp_path: Path) -> None:
    from diga.evaluate import load_segmentor
    from diga.models.weights import WeightFileError

    bad = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(WeightFileError, match=r"other\.pt: not a diga checkpoint"):
        load_segmentor(bad)


def test_micro_batches_give_the_full_batch_gradient(tmp_path: Path, toy_root: Path) -> None:
    """micro_batches=2 forwards/back-propagates two halves before one optimiser step: without BatchNorm or random
    layers in the network the weights after the run equal those of one pass over the whole batch."""
    base = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=2), "stage=source_only", "model.head.name=deeplabv2",
            "model.head.dropout=0", "model.backbone.drop_path_rate=0", "optimizer=sgd", "optimizer.lr=0.05",
            "logger=none", "datamodule.source.loader.streams=[{resize:null,batch_size:4}]"]  # fmt: skip
    for n in (1, 2):
        run_task(compose_cfg([*base, f"stage.module.micro_batches={n}", f"paths.output_dir={tmp_path}/mb{n}"]))
    a = torch.load(tmp_path / "mb1" / "final_model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "mb2" / "final_model.pt", weights_only=True)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


def test_a_pooled_set_is_reported_first_from_the_summed_confusion_matrices(tmp_path: Path, toy_root: Path) -> None:
    """ACDC's pooled validation is one confusion matrix over its conditions' sets: here two copies of the toy target
    set, so the pooled matrix is twice each one's and every IoU equals theirs; it is the run's headline, and a mean
    may name it."""
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only", "logger=none",
                       "+data@datamodule.val.again=toy", "+report_pooled.both=[toy_target,again]",
                       "+report_means.average=[both,toy_target]"])  # fmt: skip
    metrics = run_task(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    header = (tmp_path / "run" / "results.csv").read_text().splitlines()[0]
    assert header == "metric,both,toy_target,again,average"  # the pooled set first
    for key in ("mIoU", "iou/road", "aAcc"):
        assert results["both"][key] == pytest.approx(results["toy_target"][key]) == pytest.approx(results["again"][key])
    assert metrics["mIoU"] == pytest.approx(results["both"]["mIoU"])
