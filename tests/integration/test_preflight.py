"""Every input the composed plan needs is checked before anything is built; all that is missing in one message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diga.config.preflight import PreflightError
from diga.tasks import run_task
from tests.helpers import compose_cfg


def _never_build(*args, **kwargs):
    raise AssertionError("a model was built before the inputs were checked")


def test_real_pipeline_without_data_or_weights_names_everything_at_once(tmp_path: Path, monkeypatch) -> None:
    import diga.tasks.fit as fit

    monkeypatch.setattr(fit, "build_module", _never_build)
    cfg = compose_cfg(
        [
            "experiment=gta2cs",
            "stage=pipeline",
            "trainer=cpu",
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={tmp_path}/run",
        ]
    )
    with pytest.raises(PreflightError) as err:
        run_task(cfg)
    msg = str(err.value)
    for expected in (
        "GTA5",
        "images/",
        "labels/",
        "Cityscapes",
        "leftImg8bit/train/",
        "gtFine/val/",
        "mit_b5.pth",
        "vgg19-dcbb9e9d.pth",
        "paths.data_dir",
        "DIGA_DATA",
        "paths.pretrained_dir",
        "GTA5/images/00001.png",
    ):
        assert expected in msg, expected
    # produced by earlier pipeline steps, so not reported
    assert "translator.pt" not in msg and "final_model.pt" not in msg and "centroids.pt" not in msg


def test_standalone_selftrain_names_its_missing_earlier_outputs(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg(
        [
            "experiment=toy",
            "stage=selftrain",
            f"paths.data_dir={toy_root.parent}",
            f"paths.output_dir={tmp_path}",
            f"stage.init_from={tmp_path}/wu/final_model.pt",
            f"stage.pseudo_labels={tmp_path}/pl",
            f"stage.centroids={tmp_path}/c.pt",
            "stage.module.translator.kind=learned",
            f"stage.module.translator.checkpoint={tmp_path}/t.pt",
        ]
    )
    with pytest.raises(PreflightError) as err:
        run_task(cfg)
    for key in ("stage.init_from", "stage.pseudo_labels", "stage.centroids", "stage.module.translator.checkpoint"):
        assert key in str(err.value), key


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_gpu_trainer_without_gpu_says_so_in_one_line(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg(
        [
            "experiment=toy",
            "stage=source_only",
            "trainer=gpu",
            f"paths.data_dir={toy_root.parent}",
            f"paths.output_dir={tmp_path}",
        ]
    )
    with pytest.raises(PreflightError) as err:
        run_task(cfg)
    assert "\n" not in str(err.value) and "trainer=cpu" in str(err.value)


def test_cli_prints_the_message_without_a_stack_trace(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "diga.train",
            "experiment=gta_dg",
            "stage=warmup",
            "trainer=cpu",
            f"paths.root_dir={tmp_path}",
            "run_id=x",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("diga: cannot start experiment=gta_dg stage=warmup")
    assert "Traceback" not in proc.stderr and "BDD100K" in proc.stderr and "Mapillary" in proc.stderr


def test_unpaired_self_training_batches_are_refused_naming_both_streams(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_cfg(
        [
            "experiment=synthia2cs",
            "stage=selftrain",
            "trainer=cpu",
            f"paths.output_dir={tmp_path}",
            "stage.init_from=x",
            "stage.pseudo_labels=x",
            "stage.centroids=x",
            "stage.module.translator.checkpoint=x",
            "datamodule.target.loader.streams=[{resize:[512,1024],batch_size:2},{resize:[1024,2048],batch_size:2}]",
        ]
    )
    expected = r"Synthia: 1 @760×1280 \+ 2 @1140×1920\] give 3 .*Cityscapes: 2 @512×1024 \+ 2 @1024×2048\] give 4"
    with pytest.raises(Exception, match=expected):  # Hydra wraps the ValueError
        instantiate(cfg.datamodule, _recursive_=False)


def test_rerunning_a_finished_run_id_refuses_unless_resumed_or_overwritten(tmp_path: Path, toy_root: Path) -> None:
    from tests.helpers import tiny_toy_overrides

    base = [*tiny_toy_overrides(tmp_path, toy_root.parent, steps=1), "stage=source_only", "logger=none"]
    run_task(compose_cfg(base))
    before = (tmp_path / "run" / "final_model.pt").read_bytes()
    with pytest.raises(PreflightError, match=r"ckpt_path=last.*run_id=.*overwrite=true"):
        run_task(compose_cfg(base))
    assert (tmp_path / "run" / "final_model.pt").read_bytes() == before  # nothing was touched
    run_task(compose_cfg([*base, "overwrite=true"]))
    run_task(compose_cfg([*base, "ckpt_path=last", "trainer.max_steps=2"]))


def test_mistyped_overrides_are_named_by_key_before_anything_is_built(tmp_path: Path, toy_root: Path) -> None:
    wrong = ["trainer.max_steps=abc", "optimizer.lr=abc", "datamodule.crop_size=abc", "stage.module.kd_weight=high"]
    cfg = compose_cfg(["experiment=toy", "stage=warmup", *wrong, f"paths.output_dir={tmp_path}"])
    with pytest.raises(PreflightError) as err:
        run_task(cfg)
    msg = str(err.value)
    assert msg.startswith("4 value(s) of the wrong type")
    for line in ("trainer.max_steps='abc': expected int", "optimizer.lr='abc': expected float",
                 "datamodule.crop_size='abc': expected tuple[int, int]", "stage.module.kd_weight='high'"):  # fmt: skip
        assert line in msg, msg
    assert "stage.module.optimizer.lr" not in msg  # an interpolated copy is not reported twice


@pytest.mark.parametrize("experiment", ["toy", "gta2cs", "synthia2cs", "gta_dg", "cs_semi", "gta2cs_mic"])
def test_every_shipped_stage_passes_the_type_check(experiment: str, tmp_path: Path) -> None:
    from diga.config.type_checks import type_problems

    for stage in ("source_only", "translator", "warmup", "pseudolabel", "centroids", "selftrain", "daformer"):
        cfg = compose_cfg([f"experiment={experiment}", f"stage={stage}", f"paths.output_dir={tmp_path}"])
        assert type_problems(cfg) == [], (experiment, stage)


def test_sizes_below_the_encoders_minimum_are_rejected_with_the_minimum(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=gta2cs", "stage=source_only", "trainer=cpu", "datamodule.crop_size=[16,512]",
                       "inference=two_scale", "datamodule.val.cityscapes.loader.eval_resize=[48,96]",
                       f"paths.output_dir={tmp_path}"])  # fmt: skip
    with pytest.raises(PreflightError) as err:
        run_task(cfg)
    msg = str(err.value)
    assert msg.startswith("2 size(s) too small for the model")
    assert "datamodule.crop_size=[16, 512]: both sides must be at least 32" in msg
    assert "eval_resize=[48, 96]: at inference scales 1.0, 0.5 both sides must be at least 64" in msg


def test_an_hrda_window_larger_than_the_crop_is_named_before_anything_is_built(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=gta2cs_mic_hrda", "stage=daformer", "trainer=cpu", "datamodule.crop_size=[256,256]",
                       f"paths.output_dir={tmp_path}"])  # fmt: skip
    with pytest.raises(PreflightError) as err:
        run_task(cfg)
    msg = str(err.value)
    assert "model.hrda.hr_crop_size=[512, 512]: the detail window must fit in datamodule.crop_size=[256, 256]" in msg


def test_encoder_minimum_side_matches_what_the_model_can_take() -> None:
    """The meta-device sizing agrees with a real forward: MiT fails below 32 pixels and works at 32."""
    from diga.models import build_segmentor
    from diga.models.factory import min_input_side

    spec = {"backbone": "mit_b0", "head": "segformer", "num_classes": 3}
    assert min_input_side(spec) == 32
    model = build_segmentor(**spec).eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 64))
        with pytest.raises(RuntimeError):
            model(torch.rand(1, 3, 16, 64))


def test_an_unquoted_stream_override_pasted_into_bash_asks_for_quotes(tmp_path: Path) -> None:
    """Bash brace-expands `streams=[{resize:null,batch_size:2}]` into two overrides; the run must say so."""
    import shlex
    import subprocess
    import sys

    unquoted = "datamodule.source.loader.streams=[{resize:null,batch_size:2}]"
    command = (f"{shlex.quote(sys.executable)} -m diga.train experiment=toy stage=source_only run_id=x "
               f"paths.root_dir={shlex.quote(str(tmp_path))} {unquoted}")  # fmt: skip
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("diga: 1 value(s) of the wrong type:") and "Traceback" not in proc.stderr
    assert "lost its braces to the shell" in proc.stderr
    assert "'datamodule.source.loader.streams=[{resize:null,batch_size:2}]'" in proc.stderr
