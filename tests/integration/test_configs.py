"""Every experiment × stage composes, resolves and builds its objects; the authors' per-stage settings hold."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from diga.data.labels import get_label_set
from diga.data.rare_class_sampling import DAFORMER_LABEL_SIZE, DAFORMER_TRAIN_SIZE, scale_min_pixels
from tests.helpers import CONFIG_DIR, compose_cfg

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
STAGES = sorted(p.stem for p in (CONFIG_DIR / "stage").glob("*.yaml"))
# stages that consume earlier outputs must be told where they are
REQUIRED_INPUTS = {
    "pseudolabel": ["stage.init_from=/runs/warmup/final_model.pt"],
    "centroids": ["stage.init_from=/runs/warmup/final_model.pt"],
    "warmup": ["stage.module.translator.checkpoint=/runs/translator/translator.pt"],
    "selftrain": [
        "stage.init_from=/runs/warmup/final_model.pt",
        "stage.pseudo_labels=/runs/pl",
        "stage.centroids=/runs/centroids.pt",
        "stage.module.translator.checkpoint=/runs/translator/translator.pt",
    ],
}
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
CLASSES = {"toy": 7, "cityscapes19": 19, "synthia16": 16}  # written out, not derived: the config must agree


def _compose(experiment: str, stage: str, tmp_path: Path, *extra: str):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = compose_cfg([f"experiment={experiment}", f"stage={stage}", f"paths.output_dir={tmp_path}",
                           *REQUIRED_INPUTS.get(stage, []), *extra])  # fmt: skip
    del cfg.hydra  # runtime-only fields (job.num, …) are filled by a real launch
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_required_groups_exist() -> None:
    assert {"gta2cs", "synthia2cs", "gta_dg", "cs_semi", "toy"} <= set(EXPERIMENTS)
    assert {f"segformer_b{i}" for i in range(6)} | {"deeplabv2_r101"} <= set(MODELS)
    for group, names in {"data": ["gta5", "cityscapes", "synthia", "bdd100k", "mapillary", "toy", "folder"],
                         "trainer": ["cpu", "gpu", "ddp"], "logger": ["wandb", "csv", "tensorboard", "none"],
                         "inference": ["whole", "two_scale", "slide"], "translator": ["learned", "fourier", "none"],
                         "optimizer": ["adamw", "sgd"], "loss": ["ce_ref", "ohem"]}.items():  # fmt: skip
        assert {p.stem for p in (CONFIG_DIR / group).glob("*.yaml")} >= set(names)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_stage_composes(experiment: str, stage: str, tmp_path: Path) -> None:
    c = _compose(experiment, stage, tmp_path)
    assert c["experiment_name"] == experiment
    assert c["model"]["num_classes"] == CLASSES[c["label_set"]] == get_label_set(c["label_set"]).num_classes
    if c["stage"]["task"] == "fit":
        assert c["trainer"]["max_steps"] > 0
    if "module" in c["stage"] and "model" in c["stage"]["module"]:  # the module is built from the run's model
        assert c["stage"]["module"]["model"] == c["model"]
        assert c["stage"]["module"]["val_names"] == list(c["datamodule"]["val"])
    target = c["datamodule"].get("target") or {}
    own_images = str(target.get("_target_", "")).endswith("ImageFolder")  # unlabelled: nothing to validate on
    assert bool(c["datamodule"]["val"]) != own_images, "every benchmark validates on at least one target set"
    for ds in c["datamodule"]["val"].values():
        assert ds["label_set"] == c["label_set"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_model_and_trainer_instantiate(experiment: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment={experiment}", f"paths.output_dir={tmp_path}", "model.pretrained=null",
                       "trainer=cpu", "logger=csv"])  # fmt: skip
    if experiment != "toy":  # big real-benchmark models: build a small variant with the same head/classes
        cfg.model.backbone.name = "mit_b0" if cfg.model.backbone.name.startswith("mit") else "resnet18"
    model = instantiate(cfg.model)
    assert model.num_classes == CLASSES[cfg.label_set]
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == cfg.steps.source_only


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_composes(model: str, tmp_path: Path) -> None:
    from diga.models.registry import list_backbones, list_heads

    cfg = compose_cfg([f"model={model}", f"paths.output_dir={tmp_path}"])
    assert cfg.model.backbone.name in list_backbones() and cfg.model.head.name in list_heads()


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
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    from diga.tasks import run_task

    cfg = compose_cfg(["experiment=toy", f"stage={stage}", f"paths.output_dir={tmp_path}"])
    with pytest.raises((MissingMandatoryValue, InterpolationToMissingValueError), match=r"stage\.init_from"):
        run_task(cfg)


# --- the authors' per-stage settings (their training scripts), written out independently of the configs ---------
# (source streams, target streams): each stream (images per step, resize H, W); None = the stage has no target
BATCHES = {
    ("gta2cs", "translator"): ([(1, 720, 1280), (1, 1052, 1914)], [(1, 512, 1024), (1, 1024, 2048)]),
    ("gta2cs", "warmup"): ([(1, 720, 1280), (2, 1052, 1914)], None),
    ("gta2cs", "selftrain"): ([(2, 720, 1280), (1, 1052, 1914)], [(2, 512, 1024), (1, 1024, 2048)]),
    ("synthia2cs", "translator"): ([(1, 760, 1280), (1, 1140, 1920)], [(1, 512, 1024), (1, 1024, 2048)]),
    ("synthia2cs", "warmup"): ([(1, 760, 1280), (3, 1140, 1920)], None),
    ("synthia2cs", "selftrain"): ([(1, 760, 1280), (2, 1140, 1920)], [(1, 512, 1024), (2, 1024, 2048)]),
    ("gta_dg", "warmup"): ([(2, 720, 1280), (2, 1052, 1914)], None),
    ("cs_semi", "warmup"): ([(1, 512, 1024), (2, 1024, 2048)], None),
    ("cs_semi", "selftrain"): ([(1, 512, 1024), (2, 1024, 2048)], [(1, 512, 1024), (2, 1024, 2048)]),
}
# random rescale before the crop (RandomSized_and_Crop) per (experiment, stage): (source, target)
RESCALE = {
    ("gta2cs", "translator"): (None, None), ("gta2cs", "warmup"): ([0.7, 1.0], None),
    ("gta2cs", "selftrain"): ([0.7, 1.0], [0.7, 1.0]), ("synthia2cs", "translator"): (None, None),
    ("synthia2cs", "warmup"): (None, None), ("synthia2cs", "selftrain"): ([0.7, 1.0], [0.7, 1.0]),
    ("gta_dg", "warmup"): ([0.7, 1.0], None), ("cs_semi", "warmup"): (None, None),
    ("cs_semi", "selftrain"): (None, [0.7, 1.0]),
}  # fmt: skip


def _streams(domain: dict) -> list[tuple[int, int, int]]:
    return [(s["batch_size"], *s["resize"]) for s in domain["loader"]["streams"]]


@pytest.mark.parametrize(("experiment", "stage"), sorted(BATCHES))
def test_batch_composition_is_the_authors(experiment: str, stage: str, tmp_path: Path) -> None:
    c = _compose(experiment, stage, tmp_path)
    source, target = BATCHES[experiment, stage]
    assert _streams(c["datamodule"]["source"]) == source
    assert c["datamodule"]["source"]["loader"]["random_scale"] == RESCALE[experiment, stage][0]
    uses_target = c["datamodule"]["use_target"] and c["datamodule"]["target"] is not None
    assert uses_target == (target is not None)
    if target is not None:
        assert _streams(c["datamodule"]["target"]) == target
        assert c["datamodule"]["target"]["loader"]["random_scale"] == RESCALE[experiment, stage][1]
    assert c["datamodule"]["crop_size"] == ([512, 1024] if experiment == "cs_semi" else [512, 896])


@pytest.mark.parametrize("experiment", ["gta2cs", "synthia2cs", "gta_dg", "cs_semi"])
def test_source_only_baseline_sees_the_warmup_data(experiment: str, tmp_path: Path) -> None:
    so, wu = _compose(experiment, "source_only", tmp_path), _compose(experiment, "warmup", tmp_path)
    assert so["datamodule"]["source"]["loader"] == wu["datamodule"]["source"]["loader"]
    assert so["stage"]["module"]["seg_loss"] == wu["stage"]["module"]["seg_loss"]


# (experiment, stage): λ_KD, s, β, jitter p, grayscale p, sharpness p, segmentation loss
METHOD = {
    ("gta2cs", "warmup"): (0.5, 0.5, 0.4, 0.5, 0.3, 0.3, "ce"),
    ("gta2cs", "selftrain"): (0.25, 0.5, 0.3, 0.5, 0.3, 0.3, "ce"),
    ("synthia2cs", "warmup"): (0.25, 0.25, 0.4, 0.7, 0.1, 0.3, "ohem"),
    ("synthia2cs", "selftrain"): (0.25, 0.25, 0.3, 0.5, 0.3, 0.3, "ohem"),
    ("gta_dg", "warmup"): (0.5, 0.5, 0.4, 0.5, 0.3, 0.0, "ce"),
    ("cs_semi", "warmup"): (0.5, 0.5, 0.4, 0.5, 0.3, 0.3, "ce"),
    ("cs_semi", "selftrain"): (0.5, 0.5, 0.4, 0.5, 0.3, 0.3, "ce"),
}


@pytest.mark.parametrize(("experiment", "stage"), sorted(METHOD))
def test_method_settings_are_the_authors(experiment: str, stage: str, tmp_path: Path) -> None:
    m = _compose(experiment, stage, tmp_path)["stage"]["module"]
    kd, s, beta, jitter, gray, sharp, loss = METHOD[experiment, stage]
    p = m["photometric"]
    assert (m["kd_weight"], m["kd_reverse_weight"], p["beta"]) == (kd, s, beta)
    assert (p["jitter_p"], p["grayscale_p"], p["sharpness_p"], p["blur_p"]) == (jitter, gray, sharp, 0.8)
    assert m["seg_loss"]["kind"] == loss
    if loss == "ce":
        assert m["seg_loss"]["normalization"] == "all_pixels"  # the authors' CE divides by all pixels
    assert m["ema"] == {"decay": 0.999, "ramp": "reciprocal", "mode": "train", "buffers": False}
    if experiment in ("gta_dg", "cs_semi"):
        assert m["translator"]["kind"] == "none"


@pytest.mark.parametrize("experiment", ["gta2cs", "synthia2cs", "cs_semi"])
def test_centroids_and_pseudo_labels_follow_the_authors(experiment: str, tmp_path: Path) -> None:
    cen = _compose(experiment, "centroids", tmp_path)["stage"]
    assert cen["resize"] == [512, 1024] and cen["min_pixels"] == 5
    pl = _compose(experiment, "pseudolabel", tmp_path)["stage"]
    assert pl["resize"] is None and pl["confidence_threshold"] is None
    assert pl["inference"]["scales"] == [1.0, 0.5] and pl["inference"]["fusion"] == "max"
    assert pl["inference"]["align_corners"] is True


def test_semi_supervised_uses_the_authors_hrnet_ocr_recipe(tmp_path: Path) -> None:
    c = _compose("cs_semi", "warmup", tmp_path)
    assert (c["model"]["backbone"]["name"], c["model"]["head"]["name"], c["model"]["normalization"]) == (
        "hrnet_w48",
        "ocr",
        "caffe_rgb",
    )
    opt = c["optimizer"]
    assert opt["_target_"] == "torch.optim.SGD" and (opt["lr"], opt["momentum"], opt["weight_decay"]) == (
        1e-3,
        0.9,
        5e-4,
    )
    assert opt["lr_mult"] == {"backbone": 1.0, "head": 1.0} and c["scheduler"]["power"] == 1.0
    assert c["stage"]["module"]["aux_weight"] == 0.1 and c["model"]["pretrained"].endswith(
        "hrnetv2_w48_imagenet_pretrained.pth"
    )


@pytest.mark.parametrize(("experiment", "model", "file"), [
    ("gta2cs", None, "mit_b5.pth"), ("synthia2cs", "segformer_b2", "mit_b2.pth"),
    ("gta_dg", None, "DeepLab_resnet_pretrained_init-f81d91e8.pth"),
    ("gta2cs", "dinov2_vit_l", "dinov2_vitl14_pretrain.pth"), ("cs_semi", "dinov2_vit_b", "dinov2_vitb14_pretrain.pth"),
    ("gta2cs", "hrnet48_ocr", "hrnetv2_w48_imagenet_pretrained.pth"),
])  # fmt: skip
def test_an_experiment_looks_for_the_weights_of_the_model_it_runs(tmp_path: Path, experiment: str, model: str | None,
                                                                  file: str) -> None:  # fmt: skip
    """`experiment=gta2cs model=dinov2_vit_l` must not load MiT-B5's file into a ViT."""
    c = _compose(experiment, "source_only", tmp_path, *([f"model={model}"] if model else []))
    assert c["model"]["pretrained"] == f"{c['paths']['pretrained_dir']}/{file}"


def test_a_model_without_standard_weights_asks_for_a_file(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"'timm' has no standard pretrained-weights file; set model\.pretrained"):
        _compose("gta2cs", "source_only", tmp_path, "model=convnext_daformer")
    c = _compose("gta2cs", "source_only", tmp_path, "model=convnext_daformer", "model.pretrained=null")
    assert c["model"]["pretrained"] is None


def test_every_method_knob_is_set_in_one_place(tmp_path: Path) -> None:
    """EMA momentum, its ramp, λ_KD, β, the centroid momentum: each a key of `stage.module`, settable directly."""
    c = _compose("gta2cs", "selftrain", tmp_path, "stage.module.ema.decay=0.99", "stage.module.ema.ramp=none",
                 "stage.module.kd_weight=0.1", "stage.module.photometric.beta=0.2",
                 "stage.module.centroid_momentum=0.001")  # fmt: skip
    m = c["stage"]["module"]
    assert (m["ema"]["decay"], m["ema"]["ramp"], m["kd_weight"]) == (0.99, "none", 0.1)
    assert (m["photometric"]["beta"], m["centroid_momentum"]) == (0.2, 0.001)
    assert not ({"distill", "translator_net", "pseudo_label_scales", "seg_loss", "ce_normalization",
                 "num_classes", "head_lr_mult"} & set(c)), "no top-level shadow keys"  # fmt: skip


@pytest.mark.parametrize("experiment", ["gta2cs_daformer", "gta2cs_mic", "synthia2cs_daformer", "synthia2cs_mic"])
def test_daformer_and_mic_baselines_use_their_authors_recipe(experiment: str, tmp_path: Path) -> None:
    """DAFormer/MIC: MiT-B5 + DAFormer head, 40k iterations, batch 2 + 2 at 512×512, AdamW 6e-5 (head ×10), poly 1.0
    after a 1500-step linear warm-up, EMA 0.999 with DAFormer's ramp, RCS T = 0.01, feature distance 0.005 on
    thing classes, pseudo-label confidence 0.968, and (MIC only) masked consistency 1.0 with 64-px blocks at 0.7."""
    c = _compose(experiment, "daformer", tmp_path)
    m, dm = c["stage"]["module"], c["datamodule"]
    assert (c["model"]["backbone"]["name"], c["model"]["head"]["name"]) == ("mit_b5", "daformer")
    assert c["trainer"]["max_steps"] == 40000 and dm["crop_size"] == [512, 512]
    assert [s["batch_size"] for s in dm["source"]["loader"]["streams"]] == [2]
    assert [s["batch_size"] for s in dm["target"]["loader"]["streams"]] == [2]
    opt, sched = c["optimizer"], c["scheduler"]
    assert (opt["_target_"], opt["lr"], opt["weight_decay"], opt["lr_mult"]["head"]) == ("torch.optim.AdamW", 6e-5,
                                                                                           0.01, 10.0)  # fmt: skip
    assert (sched["power"], sched["warmup_steps"]) == (1.0, 1500)
    assert (m["ema"]["decay"], m["ema"]["ramp"]) == (0.999, "reciprocal")
    rcs = dm["source"]["loader"]["rare_class_sampling"]
    assert rcs["temperature"] == 0.01
    # DAFormer's counts in pixels of the real files: 3000 on the native label maps, 0.5 · 3000 in the training crop
    # of the resized image (GTA5: keep-ratio resize of 1914×1052 to 1280 wide = 704×1280; SYNTHIA 760×1280 as is)
    label_size = (1052, 1914) if experiment.startswith("gta") else (760, 1280)
    (stream,) = dm["source"]["loader"]["streams"]
    resize = tuple(stream["resize"])
    assert resize == ((704, 1280) if experiment.startswith("gta") else (760, 1280))
    reference = rcs.get("label_size") or DAFORMER_LABEL_SIZE
    assert scale_min_pixels(rcs["min_pixels"], label_size, reference) == 3000
    reference = rcs.get("train_size") or DAFORMER_TRAIN_SIZE
    assert scale_min_pixels(rcs["min_pixels"], resize, reference) * rcs["min_crop_ratio"] == 1500
    assert (m["feature_distance"]["weight"], m["feature_distance"]["things_only"]) == (0.005, True)
    assert m["pseudo_threshold"] == 0.968
    mic = m["masked_consistency"]
    assert (mic["block_size"], mic["mask_ratio"]) == (64, 0.7)
    assert mic["weight"] == (1.0 if experiment.endswith("_mic") else 0.0)


@pytest.mark.parametrize("experiment", ["gta2cs_hrda", "gta2cs_mic_hrda", "synthia2cs_hrda", "synthia2cs_mic_hrda"])
def test_hrda_experiments_use_their_authors_recipe(experiment: str, tmp_path: Path) -> None:
    """HRDA / MIC(HRDA) (lhoyer/HRDA configs/hrda/gtaHR2csHR_hrda.py, lhoyer/MIC gtaHR2csHR_mic_hrda.py): the DAFormer
    recipe at twice the resolution — 1024×1024 crops, a 512×512 detail window on an 8-pixel grid, context at 0.5,
    detail loss 0.1, a class-wise scale attention of width 256, RCS min_crop_ratio 2.0 counted in the full-resolution
    crop, validation by batched 1024×1024 windows with stride 512."""
    c = _compose(experiment, "daformer", tmp_path)
    m, dm, hrda = c["stage"]["module"], c["datamodule"], c["model"]["hrda"]
    assert (c["model"]["backbone"]["name"], c["model"]["head"]["name"]) == ("mit_b5", "daformer")
    assert (hrda["hr_crop_size"], hrda["context_scale"], hrda["crop_divisible"]) == ([512, 512], 0.5, 8)
    assert (hrda["detail_loss_weight"], hrda["detail_slide"], hrda["attention"]["embed_dim"]) == (0.1, True, 256)
    assert c["trainer"]["max_steps"] == 40000 and dm["crop_size"] == [1024, 1024]
    (source,) = dm["source"]["loader"]["streams"]
    (target,) = dm["target"]["loader"]["streams"]
    gta = experiment.startswith("gta")
    assert tuple(source["resize"]) == ((1407, 2560) if gta else (1520, 2560)) and source["batch_size"] == 2
    assert tuple(target["resize"]) == (1024, 2048) and target["batch_size"] == 2
    rcs = dm["source"]["loader"]["rare_class_sampling"]
    assert scale_min_pixels(rcs["min_pixels"], source["resize"], rcs["train_size"]) * rcs["min_crop_ratio"] == 6000
    inf = c["inference"]
    assert (inf["mode"], inf["crop_size"], inf["stride"], inf["batched"]) == ("slide", [1024, 1024], [512, 512], True)
    assert inf["align_corners"] is False and inf["scales"] == [1.0]
    assert (m["ema"]["decay"], m["feature_distance"]["weight"], m["pseudo_threshold"]) == (0.999, 0.005, 0.968)
    assert m["masked_consistency"]["weight"] == (1.0 if "_mic_" in experiment else 0.0)


@pytest.mark.parametrize("row", ["daformer", "toy_hr/diga", "toy_hr/hrda", "toy_hr/mic_hrda", "toy_hr/diga_hrda"])
def test_toy_hr_rows_train_at_half_resolution_or_on_hrda_at_full_resolution(row: str, tmp_path: Path) -> None:
    """The 2× toy's rows: DAFormer and DiGA train on 80×160 images and predict at half scale; the HRDA rows switch
    every step to toy_hr_hrda (full 160×320 images, 128×256 crops, a 64×128 detail window); all score 160×320."""
    from diga.tasks.pipeline import step_configs

    cfg = compose_cfg(["experiment=toy_hr", "stage=pipeline", f"ablation={row}", f"paths.output_dir={tmp_path}"])
    steps = step_configs(cfg)
    assert steps
    for step, c in steps:
        hrda = "hrda" in row
        assert (c.model.hrda is not None) == hrda, step.name
        assert c.toy_spec.height == 160 and c.toy_spec.width == 320
        if step.stage in ("source_only", "warmup", "selftrain", "daformer"):
            assert list(c.datamodule.crop_size) == ([128, 256] if hrda else [64, 128]), step.name
            assert c.datamodule.target.loader.streams[0].resize == (None if hrda else [80, 160]), step.name
            assert list(c.inference.scales) == ([1.0] if hrda else [0.5])
        if step.stage in ("pseudolabel", "centroids"):
            assert c.stage.resize == (None if hrda else [80, 160]), step.name


ADVERSE = [f"cs2{t}_{m}" for t in ("acdc", "darkzurich") for m in ("daformer", "mic", "hrda", "mic_hrda")]


@pytest.mark.parametrize("experiment", ADVERSE)
def test_adverse_condition_baselines_use_their_authors_recipe(experiment: str, tmp_path: Path) -> None:
    """Cityscapes → ACDC / Dark Zurich (DAFormer/HRDA experiments.py cityscapes → acdc / darkzurich, HRDA id 49, MIC
    id 80): Cityscapes 1024×512 and the target 960×540 with 512×512 crops (single resolution), or 2048×1024 and the
    native 1920×1080 with 1024×1024 crops and a 512×512 detail window (HRDA); RCS T = 0.01 counted on the native
    Cityscapes labels (crop minimum 0.5 · 3000 at 1024×512, 2.0 · 3000 at 2048×1024); no pseudo-label margins; MIC
    masks the target without colour augmentation ("separate"); validation at 960×540 whole, or by batched windows."""
    c = _compose(experiment, "daformer", tmp_path)
    m, dm, inf = c["stage"]["module"], c["datamodule"], c["inference"]
    hrda = "_hrda" in experiment
    assert (c["model"]["backbone"]["name"], c["model"]["head"]["name"]) == ("mit_b5", "daformer")
    assert c["trainer"]["max_steps"] == 40000 and c["label_set"] == "cityscapes19"
    assert dm["source"]["_target_"] == "diga.data.datasets.Cityscapes"
    target = "ACDC" if "acdc" in experiment else "DarkZurich"
    assert dm["target"]["_target_"] == f"diga.data.datasets.{target}"
    # the upper bound trains on the target's labels: ACDC has them for train, Dark Zurich does not
    assert _compose(experiment, "pipeline", tmp_path)["stage"]["oracle"] == (target == "ACDC")
    if target == "DarkZurich":
        assert dm["target"]["times"] == ["night"] and list(dm["val"]) == ["dark_zurich"]
    else:
        assert dm["target"]["conditions"] is None
        assert [v["conditions"] for v in dm["val"].values()] == ["fog", "night", "rain", "snow"]
        assert c["report_pooled"] == {"acdc": ["acdc_fog", "acdc_night", "acdc_rain", "acdc_snow"]}
    (source,) = dm["source"]["loader"]["streams"]
    (tgt,) = dm["target"]["loader"]["streams"]
    assert (source["batch_size"], tgt["batch_size"]) == (2, 2)
    assert tuple(source["resize"]) == ((1024, 2048) if hrda else (512, 1024))
    assert tuple(tgt["resize"]) == ((1080, 1920) if hrda else (540, 960))
    assert dm["crop_size"] == ([1024, 1024] if hrda else [512, 512])
    assert dm["target"]["loader"]["pseudo_margins"] is None
    rcs = dm["source"]["loader"]["rare_class_sampling"]
    assert rcs["temperature"] == 0.01 and scale_min_pixels(rcs["min_pixels"], (1024, 2048), rcs["label_size"]) == 3000
    crop_min = scale_min_pixels(rcs["min_pixels"], source["resize"], rcs["train_size"]) * rcs["min_crop_ratio"]
    assert crop_min == (6000 if hrda else 1500)
    opt, sched = c["optimizer"], c["scheduler"]
    assert (opt["lr"], opt["weight_decay"], opt["lr_mult"]["head"]) == (6e-5, 0.01, 10.0)
    assert (sched["power"], sched["warmup_steps"]) == (1.0, 1500)
    assert (m["ema"]["decay"], m["feature_distance"]["weight"], m["pseudo_threshold"]) == (0.999, 0.005, 0.968)
    mic = m["masked_consistency"]
    assert (mic["weight"], mic["block_size"], mic["mask_ratio"], mic["augment"]) == (
        1.0 if "_mic" in experiment else 0.0, 64, 0.7, False)  # fmt: skip
    if hrda:
        assert (c["model"]["hrda"]["hr_crop_size"], c["model"]["hrda"]["detail_loss_weight"]) == ([512, 512], 0.1)
        assert (inf["mode"], inf["crop_size"], inf["stride"], inf["batched"], inf["scales"]) == (
            "slide", [1024, 1024], [512, 512], True, [1.0])  # fmt: skip
    else:
        assert (inf["mode"], inf["scales"], inf["align_corners"]) == ("whole", [0.5], False)


@pytest.mark.parametrize("experiment", ["cs2acdc", "cs2darkzurich"])
def test_diga_on_adverse_conditions_keeps_the_gta_recipe_at_each_domains_scales(
    experiment: str, tmp_path: Path
) -> None:
    """DiGA on ACDC / Dark Zurich: the GTA5 → Cityscapes recipe per stage with Cityscapes (1024×2048, 512×1024) as the
    source and the 1920×1080 target at full and half size; the targets train without labels."""
    warmup = _compose(experiment, "warmup", tmp_path)
    selftrain = _compose(experiment, "selftrain", tmp_path)
    source = warmup["datamodule"]["source"]["loader"]["streams"]
    assert [tuple(s["resize"]) for s in source] == [(512, 1024), (1024, 2048)]
    streams = selftrain["datamodule"]["target"]["loader"]["streams"]
    assert [(tuple(s["resize"]), s["batch_size"]) for s in streams] == [((540, 960), 2), ((1080, 1920), 1)]
    assert (warmup["stage"]["module"]["kd_weight"], selftrain["stage"]["module"]["kd_weight"]) == (0.5, 0.25)
    assert _compose(experiment, "centroids", tmp_path)["stage"]["resize"] == [540, 960]
    assert _compose(experiment, "pipeline", tmp_path)["stage"]["oracle"] == (experiment == "cs2acdc")


def test_domain_generalisation_targets_and_synthia_split(tmp_path: Path) -> None:
    """gta_dg scores four unseen domains (SYNTHIA-val: RobustNet's 2,820-frame list); synthia_dg trains on RobustNet's
    6,580-frame SYNTHIA split with Cityscapes' 19 classes and scores the three real ones."""
    gta = _compose("gta_dg", "warmup", tmp_path)
    assert list(gta["datamodule"]["val"]) == ["cityscapes", "bdd100k", "mapillary", "synthia"]
    val = gta["datamodule"]["val"]["synthia"]
    assert val["loader"]["splits"]["val"] == "val" and val["split_dir"].endswith("RAND_CITYSCAPES")
    syn = _compose("synthia_dg", "warmup", tmp_path)
    assert (
        list(syn["datamodule"]["val"]) == ["cityscapes", "bdd100k", "mapillary"] and syn["label_set"] == "cityscapes19"
    )
    src = syn["datamodule"]["source"]
    assert src["loader"]["splits"]["train"] == "dg_train" and src["split_dir"].endswith("RAND_CITYSCAPES")
    assert not syn["datamodule"]["use_target"] and syn["stage"]["module"]["translator"]["kind"] == "none"
    # no target domain at all: nothing to load, nothing for check_data to look for
    assert gta["datamodule"].get("target") is None and syn["datamodule"].get("target") is None
    assert syn["stage"]["module"]["seg_loss"]["kind"] == "ohem"
