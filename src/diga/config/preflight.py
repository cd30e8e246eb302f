"""Checks before anything is built: every input the composed plan will read exists, and the requested device does.

A real schedule runs for days; a file that is only opened by its third stage must not cost the first two. For a
single stage or a whole pipeline this collects what every step will read — dataset folders in their official layout
(each dataset class declares its `layout()`), the model a step starts from, and the files each stage module declares
(`declared_inputs` of the stage contract, `diga.modules.contract`) — leaves out what earlier steps of the same
pipeline produce, and reports everything that is missing in one message, with where to put it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig

from diga.data.archives import dataset_root
from diga.modules.contract import StageInput, check_stage_class, file_input
from diga.utils.artifacts import StageOutputs
from diga.utils.hydra import to_plain


class PreflightError(RuntimeError):
    """The run cannot start: the message lists every problem found."""


@dataclass
class Input:
    group: str  # dataset | weights | earlier output
    what: str
    path: Path
    set_with: str  # the config key(s) that point diga at it
    expected: str = ""
    needed_by: list[str] = field(default_factory=list)
    required: list[Path] = field(default_factory=list)  # what must exist (default: `path`)

    def missing(self) -> list[Path]:
        return [p for p in (self.required or [self.path]) if not p.exists()]


GROUP_HINTS = {
    "dataset": "datasets: put them under paths.data_dir (or the DIGA_DATA environment variable), in the official "
    "layouts below, or point datamodule.<source|target|val.NAME>.root at each",
    "weights": "weights: local files only (nothing is downloaded); put them under paths.pretrained_dir or set the "
    "key shown",
    "earlier output": "outputs of earlier stages: run those stages first (or stage=pipeline, which chains them)",
}


def _dataset_inputs(cfg: Mapping[str, Any] | None, split_key: str, with_labels: bool, role: str) -> list[Input]:
    if not cfg or "_target_" not in cfg:
        return []
    cls = get_class(str(cfg["_target_"]))
    loader = cfg.get("loader") or {}
    split = (loader.get("splits") or {}).get(split_key, split_key)
    name = cls.__name__
    if cfg.get("generate") is False and hasattr(cls, "layout"):
        paths = [Path(cfg["root"])]
    else:
        root = dataset_root(cls, cfg["root"], split, with_labels)  # an unpacked layout or the official archives
        paths = cls.layout(root, split, with_labels) if hasattr(cls, "layout") else [Path(cfg["root"])]
    if with_labels and cfg.get("labels"):  # a folder domain's labels live beside its images (data=folder)
        paths = [*paths, Path(cfg["labels"])]
    slots = {"source": "datamodule.source", "target": "datamodule.target", "target with labels": "datamodule.target"}
    key = slots.get(role, f"datamodule.val.{role}")
    return (
        [
            Input(
                "dataset",
                name,
                Path(cfg["root"]),
                f"paths.data_dir or {key}.root",
                cls.layout_help,
                required=list(paths),
            )
        ]
        if paths
        else []
    )


def _declared(i: StageInput) -> Input:
    return Input(i.group, i.what, Path(i.path or ""), i.set_with, i.expected)


def stage_inputs(cfg: DictConfig) -> list[Input]:
    """What one composed stage will read: its datasets, the model it starts from, and what its module declares
    (`diga.modules.contract`). A stage without a module (an offline task) predicts over the target's training
    images with the model of `stage.init_from`."""
    st = to_plain(cfg.stage)
    task = st.get("task", "fit")
    dm = to_plain(cfg.get("datamodule")) or {}
    if task == "pipeline":
        return []
    if task != "fit":
        model = file_input("earlier output", "model to predict with", st.get("init_from"), "stage.init_from",
                           "a final_model.pt of a warm-up or self-training run")  # fmt: skip
        return [*_dataset_inputs(dm.get("target"), "train", False, "target"), *map(_declared, model)]
    stage_class = get_class(str(st["module"]["_target_"]))
    check_stage_class(stage_class)
    out = _dataset_inputs(dm.get("target") if dm.get("target_as_source") else dm.get("source"), "train", True,
                          "target with labels" if dm.get("target_as_source") else "source")  # fmt: skip
    if dm.get("use_target") and dm.get("target") and not dm.get("target_as_source"):
        out += _dataset_inputs(dm["target"], "train", False, "target")
    if stage_class.validates:
        for name, val in (dm.get("val") or {}).items():
            out += _dataset_inputs(val, "val", True, name)
    start = file_input("earlier output", "model to start from", st.get("init_from"), "stage.init_from",
                       "a final_model.pt (or .ckpt) of the previous stage")  # fmt: skip
    return [*out, *(_declared(i) for i in [*stage_class.declared_inputs(st), *start])]


def plan_inputs(cfg: DictConfig, steps: Sequence[tuple[str, Path, DictConfig]] = ()) -> list[Input]:
    """What the whole run reads: one stage, or every step of a pipeline — `(name, run directory, composed config)`
    each — minus what earlier steps produce."""
    if cfg.stage.get("task") != "pipeline":
        inputs = stage_inputs(cfg)
        for i in inputs:
            i.needed_by.append(str(cfg.stage.name))
        return inputs
    produced = [Path(cfg.paths.output_dir).resolve(), *(root.resolve() for _, root, _ in steps)]
    merged: dict[tuple[str, Path], Input] = {}
    for name, _, step_cfg in steps:
        for i in stage_inputs(step_cfg):
            if any(i.path.resolve().is_relative_to(r) for r in produced):  # written by a step of this pipeline
                continue
            seen = merged.setdefault((i.group, i.path), i)
            seen.required = sorted(set(seen.required) | set(i.required))
            if name not in seen.needed_by:
                seen.needed_by.append(name)
    return list(merged.values())


def device_problem(cfg: DictConfig) -> str | None:
    import torch

    accel = str(cfg.get("trainer", {}).get("accelerator", "cpu"))
    device = str(cfg.stage.get("device", "auto"))
    wants_cuda = accel in ("gpu", "cuda") or device.startswith("cuda")
    if wants_cuda and not torch.cuda.is_available():
        which = f"trainer.accelerator={accel}" if accel in ("gpu", "cuda") else f"stage.device={device}"
        return f"{which} asks for a CUDA GPU, but this machine has none visible: run with trainer=cpu"
    return None


def precision_problems(cfg: DictConfig) -> list[str]:
    """Settings of the training step that cannot work: a "true" 16-bit mode (weights and state in 16 bits),
    bf16 on a GPU without it, deterministic kernels where torch has none for what diga runs."""
    import torch

    from diga.utils.accelerator import trains_on_cuda
    from diga.utils.precision import true_precision_problem

    trainer = cfg.get("trainer", {})
    if cfg.stage.get("task", "fit") not in ("fit", "pipeline"):
        return []
    out = []
    precision = str(trainer.get("precision", "32-true"))
    if problem := true_precision_problem(precision):
        out.append(problem)
    cuda = trains_on_cuda(trainer.get("accelerator", "cpu"))
    visible = cuda and torch.cuda.is_available()
    if visible and precision.startswith("bf16") and not torch.cuda.is_bf16_supported(including_emulation=False):
        out.append(f"trainer.precision={precision}: this GPU ({torch.cuda.get_device_name()}) has no bfloat16 "
                   "arithmetic; use trainer.precision=16-mixed (fp16 with loss scaling) or 32-true")  # fmt: skip
    if cuda and trainer.get("deterministic") is True:
        out.append("trainer.deterministic=true on CUDA: the backward passes of bilinear up-sampling (every loss) and "
                   "ReflectionPad2d (the translator) have no deterministic CUDA kernel, so the first backward would "
                   "raise; use trainer.deterministic=warn (deterministic kernels wherever torch has one)")  # fmt: skip
    return out


def overwrite_problem(cfg: DictConfig) -> str | None:
    """A training stage started again in a run directory that already holds its outputs, without `ckpt_path=last`,
    would overwrite them next to an old checkpoint: refuse unless asked to (`overwrite=true`)."""
    if cfg.stage.get("task", "fit") != "fit" or cfg.get("ckpt_path") or cfg.get("overwrite", False):
        return None
    out = StageOutputs(Path(str(cfg.paths.output_dir)))
    found = [p.name for p in (out.last_checkpoint, out.final_model, out.results) if p.exists()]
    if not found:
        return None
    return (
        f"{out.root} already holds a run of stage {cfg.stage.name} ({', '.join(found)}): resume it with "
        "ckpt_path=last, start a new one with another run_id=…, or replace it with overwrite=true"
    )


def check_inputs(cfg: DictConfig, steps: Sequence[tuple[str, Path, DictConfig]] = ()) -> None:
    """Raise one `PreflightError` naming every mistyped value, every missing input and a missing GPU, before any
    model is built. A pipeline passes its steps: `(name, run directory, composed config)` each."""
    from diga.config.shape_checks import shape_problems
    from diga.config.type_checks import type_problems
    from diga.config.value_checks import value_problems

    configs = [cfg, *(c for _, _, c in steps)]
    typed = list(dict.fromkeys(p for c in configs for p in type_problems(c)))
    if typed:
        raise PreflightError("\n  ".join([f"{len(typed)} value(s) of the wrong type:", *typed]))
    ranged = list(dict.fromkeys(p for c in configs for p in value_problems(c)))
    if ranged:
        raise PreflightError("\n  ".join([f"{len(ranged)} value(s) out of range:", *ranged]))
    small = list(dict.fromkeys(p for c in configs for p in shape_problems(c)))
    if small:
        raise PreflightError("\n  ".join([f"{len(small)} size(s) too small for the model:", *small]))
    settings = precision_problems(cfg)
    if settings:
        lines = settings if len(settings) == 1 else [f"{len(settings)} settings that cannot train:", *settings]
        raise PreflightError("\n  ".join(lines))
    if problem := overwrite_problem(cfg):
        raise PreflightError(problem)
    device = device_problem(cfg)
    missing = [i for i in plan_inputs(cfg, steps) if i.missing()]
    if not missing:
        if device:
            raise PreflightError(device)
        return
    run = f"experiment={cfg.get('experiment_name')} stage={cfg.stage.name}"
    lines = [f"cannot start {run}: {len(missing)} input(s) missing" + (f"; {device}" if device else "")]
    data_dir = cfg.get("paths", {}).get("data_dir")
    pretrained_dir = cfg.get("paths", {}).get("pretrained_dir")
    for group in ("dataset", "weights", "earlier output"):
        items = [i for i in missing if i.group == group]
        if not items:
            continue
        now = {
            "dataset": f" (paths.data_dir is now {data_dir})",
            "weights": f" (paths.pretrained_dir is now {pretrained_dir})",
        }.get(group, "")
        lines.append(f"  {GROUP_HINTS[group]}{now}:")
        for i in items:
            gone = i.missing()
            where = (
                f"{i.path} is missing {', '.join(str(p.relative_to(i.path)) + '/' for p in gone)}"
                if i.required and all(p.is_relative_to(i.path) and p != i.path for p in gone)
                else f"{gone[0]} not found"
            )
            lines.append(f"    - {i.what}: {where} (set {i.set_with}; needed by {', '.join(i.needed_by)})")
            if i.expected:
                lines.append(f"        expected: {i.expected}")
    raise PreflightError("\n".join(lines))
