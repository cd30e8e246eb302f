"""`python -m diga.export ckpt=… output=…` — a trained segmentor as ONNX or as a Hugging Face model, verified.

format=onnx: the graph takes RGB images in [0, 1] (N×3×H×W: dynamic batch, H×W fixed at export time) and returns
logits at the input resolution; it is run with onnxruntime on a random input and compared with PyTorch.
format=hf: a MiT + SegFormer-head model becomes a `SegformerForSemanticSegmentation` folder (config.json with
id2label, model.safetensors) that `transformers` loads; it is loaded back and its logits compared with diga's.
A mismatch above the tolerance is an error and nothing is written.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from diga.config import register_resolvers
from diga.evaluation.inference import InferenceConfig, check_image_size
from diga.models.loading import load_segmentor
from diga.models.segmentor import Segmentor
from diga.utils.io import atomic_write_bytes

register_resolvers()


class LogitsAtInputSize(nn.Module):
    """The deployable graph: image → logits up-sampled to the image size."""

    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.model.align_corners)


class ExportSizeError(ValueError):
    """`height`/`width` below the model's minimum: a user error, reported in one line."""


def check_export_size(model: Segmentor, height: int, width: int) -> None:
    """Tracing a too-small example dies deep inside a convolution: name the keys instead, by inference's own rule."""
    try:
        check_image_size(height, width, model.min_input_side, InferenceConfig(), f"height={height} width={width}")
    except ValueError as e:
        raise ExportSizeError(str(e)) from None


def export_onnx(ckpt: str | Path, output: str | Path, height: int = 512, width: int = 1024, opset: int = 18,
                atol: float = 1e-3) -> float:  # fmt: skip
    """Export and verify; returns the max |ONNX − PyTorch| logit difference on a random input."""
    import onnxruntime as ort

    model, _ = load_segmentor(ckpt)
    check_export_size(model, height, width)
    for m in model.modules():  # encoders with size-dependent work (ViT position embeddings) freeze it here
        if hasattr(m, "fix_input_size"):
            m.fix_input_size(height, width)
    wrapped = LogitsAtInputSize(model).eval()
    x = torch.rand(1, 3, height, width)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(wrapped, (x,), str(path), input_names=["image"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)  # fmt: skip
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            ref = wrapped(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        diff = float(np.abs(got - ref).max())
        if diff > atol:
            raise RuntimeError(f"{ckpt}: ONNX output differs from PyTorch by {diff:.2e} (> {atol}); not written")
        atomic_write_bytes(output, path.read_bytes())
    return diff


def export_hf(ckpt: str | Path, output: str | Path, height: int = 512, width: int = 1024,
              atol: float = 1e-3) -> float:  # fmt: skip
    """Write a `transformers` SegFormer folder; returns the max |transformers − diga| logit difference."""
    import shutil

    from diga.data.labels import get_label_set
    from diga.models.backbones.mit import MiTBackbone
    from diga.models.heads.segformer import SegFormerHead
    from diga.models.hf_segformer import write_hf_folder
    from diga.models.segmentor import IMAGENET_MEAN, IMAGENET_STD

    model, label_set = load_segmentor(ckpt)
    check_export_size(model, height, width)
    if not (isinstance(model.backbone, MiTBackbone) and isinstance(model.head, SegFormerHead)):
        parts = f"{type(model.backbone).__name__} + {type(model.head).__name__}"
        raise ValueError(f"{ckpt}: format=hf needs a MiT encoder with the SegFormer head (this model: {parts}); "
                         "use format=onnx")  # fmt: skip
    if model.normalize.kind != "imagenet":
        kind = model.normalize.kind
        raise ValueError(f"{ckpt}: format=hf assumes ImageNet input normalisation, the model uses {kind}")
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"{output}: exists and is not empty; choose another output (nothing was written)")
    from transformers import SegformerForSemanticSegmentation

    classes = dict(enumerate(get_label_set(label_set).classes))
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    write_hf_folder(model, model.backbone.variant, classes, staging)
    hf = SegformerForSemanticSegmentation.from_pretrained(staging).eval()
    x = torch.rand(1, 3, height, width)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        diff = float((hf(pixel_values=(x - mean) / std).logits - model(x).logits).abs().max())
    if diff > atol:
        shutil.rmtree(staging)
        raise RuntimeError(f"{ckpt}: transformers' logits differ from diga's by {diff:.2e} (> {atol}); not written")
    if output.exists():
        output.rmdir()
    staging.replace(output)
    return diff


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    import sys

    from diga.models.weights import WeightFileError

    try:
        export(cfg)
    except (WeightFileError, ExportSizeError) as e:  # the message names the file or the keys: no stack trace needed
        print(f"diga: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def export(cfg: DictConfig) -> None:
    """Run the chosen format and print where it was written."""
    if cfg.format == "hf":
        diff = export_hf(cfg.ckpt, cfg.output, cfg.height, cfg.width, cfg.atol)
        print(f"wrote {cfg.output} (SegformerForSemanticSegmentation); max |transformers − diga| = {diff:.2e}")
    elif cfg.format == "onnx":
        diff = export_onnx(cfg.ckpt, cfg.output, cfg.height, cfg.width, cfg.opset, cfg.atol)
        print(f"wrote {cfg.output}; max |onnxruntime − pytorch| = {diff:.2e}")
    else:
        raise SystemExit(f"diga: format={cfg.format} is not one of onnx, hf")


if __name__ == "__main__":
    main()
