"""Every experiment × stage composes, resolves, and builds its objects; no Hydra warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers import CONFIG_DIR, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
STAGES = sorted(p.stem for p in (CONFIG_DIR / "stage").glob("*.yaml"))
# stages that consume earlier outputs must be told where they are
REQUIRED_INPUTS = {
    "pseudolabel": ["stage.init_from=/runs/warmup/final_model.pt"],
    "centroids": ["stage.init_from=/runs/warmup/final_model.pt"],
    "selftrain": [
        "stage.init_from=/runs/warmup/final_model.pt",
        "pseudo_label_dir=/runs/pl",
        "centroids_path=/runs/centroids.pt",
    ],
}
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def test_required_groups_exist() -> None:
    assert {"gta2cs", "synthia2cs", "gta_dg", "cs_semi", "toy"} <= set(EXPERIMENTS)
    assert {f"segformer_b{i}" for i in range(6)} | {"deeplabv2_r101"} <= set(MODELS)
    for group, names in {"data": ["gta5", "cityscapes", "synthia", "bdd100k", "mapillary", "toy"],
                         "trainer": ["cpu", "gpu", "ddp"], "logger": ["wandb", "csv", "none"]}.items():  # fmt: skip
        assert {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")} >= set(names)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_stage_composes(experiment: str, stage: str, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = compose_cfg([f"experiment={experiment}", f"stage={stage}", f"paths.output_dir={tmp_path}",
                           *REQUIRED_INPUTS.get(stage, [])])  # fmt: skip
    del cfg.hydra  # runtime-only fields (job.num, …) are filled by a real launch
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert container["experiment_name"] == experiment
    if container["stage"]["task"] == "fit":
        assert container["trainer"]["max_steps"] > 0
    assert container["model"]["num_classes"] == container["num_classes"]
    assert container["datamodule"]["val"], "every experiment validates on at least one target set"
    for ds in container["datamodule"]["val"].values():
        assert ds["label_set"] == container["label_set"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_model_and_trainer_instantiate(experiment: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment={experiment}", f"paths.output_dir={tmp_path}", "model.pretrained=null",
                       "trainer=cpu", "logger=csv"])  # fmt: skip
    if experiment != "toy":  # big real-benchmark models: build a small variant with the same head/classes
        cfg.model.backbone = "mit_b0" if cfg.model.backbone.startswith("mit") else "resnet50"
    model = instantiate(cfg.model)
    assert model.num_classes == cfg.num_classes
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == cfg.steps.source_only


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_composes(model: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"model={model}", f"paths.output_dir={tmp_path}"])
    assert cfg.model.backbone in {f"mit_b{i}" for i in range(6)} | {"resnet101"}


def test_wandb_logger_defaults_to_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = compose_cfg(["logger=wandb", f"paths.output_dir={tmp_path}"])
    assert cfg.logger.wandb.mode == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert cfg.logger.wandb.mode == "online"


@pytest.mark.parametrize("stage", ["pseudolabel", "centroids", "selftrain"])
def test_stage_without_its_inputs_fails_fast(stage: str, tmp_path: Path) -> None:
    from omegaconf.errors import MissingMandatoryValue

    from diga.tasks import run_task

    cfg = compose_cfg(["experiment=toy", f"stage={stage}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(MissingMandatoryValue, match="init_from"):
        run_task(cfg)
