"""Composing the real Hydra configs in tests (without the CLI)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict

from diga.config import compose_config, register_resolvers
from tests.fakes import TINY_TOY

register_resolvers()

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_cfg(overrides: list[str], config_name: str = "train") -> DictConfig:
    return compose_config(overrides, config_name)


def tiny_toy_overrides(tmp_path: Path, data_root: Path, steps: int = 2) -> list[str]:
    """A toy run that finishes in seconds: tiny generated data, few steps, no workers."""
    spec = ",".join(f"{k}:{v}" for k, v in TINY_TOY.items())
    return [
        "experiment=toy",
        f"paths.root_dir={tmp_path}",
        f"paths.data_dir={data_root}",
        f"paths.output_dir={tmp_path}/run",
        f"toy_spec={{{spec}}}",
        f"trainer.max_steps={steps}",
        f"val_every={steps}",
        f"ckpt_every={steps}",
        "datamodule.crop_size=[32,32]",
        "datamodule.num_workers=0",
        "datamodule.val_batch_size=4",
        "datamodule.source.loader.streams=[{resize:null,batch_size:2}]",
        "datamodule.target.loader.streams=[{resize:null,batch_size:2}]",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]


# 0.5× of a 32×64 image is too small for MiT: tiny runs predict pseudo-labels at one scale
TINY_PSEUDO_LABELS = "stage.inference.scales=[1.0]"


def tiny_pipeline_overrides(refine_rounds: int = 1) -> list[str]:
    """`stage=pipeline` at tiny size: single-scale pseudo-labels in every round, `refine_rounds` refinements."""
    return ["stage=pipeline", f"stage.refine_rounds={refine_rounds}",
            f"++stage.step_overrides={{pseudolabel:['{TINY_PSEUDO_LABELS}']}}"]  # fmt: skip


def set_output_dir(cfg: DictConfig, path: Path) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = str(path)


def run_if(min_cuda_gpus: int = 0):
    """Lightning-style RunIf: a skip mark naming what the machine lacks (GPU tests skip cleanly on CPU-only CI)."""
    import pytest
    import torch

    reasons = []
    if min_cuda_gpus and torch.cuda.device_count() < min_cuda_gpus:
        reasons.append(f"needs {min_cuda_gpus} CUDA GPU(s), found {torch.cuda.device_count()}")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))


MIC_TINY = "stage.module.masked_consistency={weight:1.0,mask_ratio:0.7,block_size:8}"
TRAINING_STAGES = ("source_only", "translator", "warmup", "selftrain", "daformer")


def training_stage_overrides(stage: str, selftrain_inputs: tuple[Path, Path] | None = None) -> list[str]:
    """Every training stage at tiny size with what it reads: the warm-up and self-training with the Fourier
    translator (no translator run needed), self-training from fixed pseudo-labels and centroids
    (`selftrain_inputs` fixture), DAFormer with MIC and the feature distance (every optional loss on)."""
    if stage == "selftrain":
        if selftrain_inputs is None:
            raise ValueError("stage=selftrain needs the selftrain_inputs fixture")
        pl_dir, centroids = selftrain_inputs
        return ["stage=selftrain", "stage.module.translator.kind=fourier", f"stage.pseudo_labels={pl_dir}",
                f"stage.centroids={centroids}", "stage.init_from=null"]  # fmt: skip
    extra = {
        "warmup": ["stage.module.translator.kind=fourier"],
        "daformer": [MIC_TINY, "stage.module.feature_distance.weight=0.005"],
    }
    return [f"stage={stage}", *extra.get(stage, [])]
