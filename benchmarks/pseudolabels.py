"""Pseudo-label generation: diga's stage vs the reference's procedure, same model, same images.

The reference (`pseudolabel_generator.py`) predicts one image at a time, runs each scale, fuses the logits by
max, soft-maxes, takes the argmax and buffers every prediction in one float64 array before writing (≈50 GB for
Cityscapes); the naive version below does exactly that (at benchmark scale the buffer is small; its growth per
image is reported).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.device import bench_device
from diga.config import compose_config
from diga.data.io import save_label_png
from diga.models.loading import load_segmentor
from diga.offline.launch import target_train_dataset
from diga.tasks import run_task


def _overrides(model: Path, work: Path, case: list[str], images: int) -> list[str]:
    return [*case, "stage=pseudolabel", f"stage.init_from={model}", f"paths.root_dir={work}",
            f"+datamodule.target.limit={images}", "datamodule.num_workers=0", f"stage.device={bench_device()}",
            "trainer.enable_progress_bar=false"]  # fmt: skip


def measure_ours(model: Path, work: Path, case: list[str], images: int) -> dict[str, Any]:
    """`stage=pseudolabel` end to end (model load included), streamed PNG writes."""
    t = time.perf_counter()
    run_task(compose_config([*_overrides(model, work, case, images), f"paths.output_dir={work / 'ours'}"]))
    dt = time.perf_counter() - t
    return {"images": images, "img_per_s": images / dt}


def measure_naive(model: Path, work: Path, case: list[str], images: int) -> dict[str, Any]:
    """The reference's loop: batch 1, per-scale forward, logit max, softmax, argmax, float64 buffer of all maps,
    then PNGs."""
    t = time.perf_counter()
    cfg = compose_config([*_overrides(model, work, case, images), f"paths.output_dir={work / 'naive'}"])
    net, _ = load_segmentor(model)
    dev = torch.device(bench_device())
    net.to(dev)
    dataset = target_train_dataset(cfg)
    scales = list(cfg.stage.inference.scales)
    buffer: np.ndarray | None = None
    names = []
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            h, w = sample["image"].shape[-2:]
            if buffer is None:
                buffer = np.zeros((len(dataset), h, w))  # float64, like the reference
            x = sample["image"].unsqueeze(0).to(dev).float() / 255
            fused = None
            for s in scales:
                xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=True)
                logits = F.interpolate(net(xs).logits, size=(h, w), mode="bilinear", align_corners=True)
                fused = logits if fused is None else torch.maximum(fused, logits)
            buffer[i] = F.softmax(fused, dim=1).argmax(1)[0].cpu().numpy()
            names.append(sample["name"])
    out = work / "naive" / "pseudo_labels"
    for name, lab in zip(names, buffer):
        save_label_png(out / f"{name}.png", lab.astype(np.uint8))
    dt = time.perf_counter() - t
    return {"images": images, "img_per_s": images / dt, "buffer_mb_per_image": h * w * 8 / 2**20}
