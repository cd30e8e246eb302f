"""`python -m diga.export ckpt=… output=model.onnx` — ONNX export of a trained segmentor, verified against PyTorch.

The exported graph takes RGB images in [0, 1] (N×3×H×W: dynamic batch, H×W fixed at export time) and returns
logits at the input resolution. After export the ONNX model is run with onnxruntime on a random input and
compared with the PyTorch model; a mismatch above the tolerance is an error (the file is not kept).
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

from diga.data.io import atomic_write_bytes
from diga.models.checkpoint import load_segmentor
from diga.models.segmentor import Segmentor
from diga.tasks.config import register_resolvers

register_resolvers()


class LogitsAtInputSize(nn.Module):
    """The deployable graph: image → logits up-sampled to the image size."""

    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.model.align_corners)


def export_onnx(ckpt: str | Path, output: str | Path, height: int = 512, width: int = 1024, opset: int = 18,
                atol: float = 1e-3) -> float:  # fmt: skip
    """Export and verify; returns the max |ONNX − PyTorch| logit difference on a random input."""
    import onnxruntime as ort

    model, _ = load_segmentor(ckpt)
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


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    diff = export_onnx(cfg.ckpt, cfg.output, cfg.height, cfg.width, cfg.opset, cfg.atol)
    print(f"wrote {cfg.output}; max |onnxruntime − pytorch| = {diff:.2e}")


if __name__ == "__main__":
    main()
