"""`python -m diga.predict ckpt=… input=DIR|IMAGE output=DIR` — segment a folder of images, or one image.

Writes, per image: `<name>_trainIds.png` (palettised train-ids), `<name>_labelIds.png` (Cityscapes label ids, the
official evaluation format; only for Cityscapes label spaces) and `<name>_color.png` (a colour overlay). One image
at a time, atomically; works on CPU; sliding-window inference for large images (`inference.mode=slide`).
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from collections.abc import Iterable, Iterator
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from diga.config import register_resolvers
from diga.data.io import DatasetError, read_rgb, save_label_png, save_png
from diga.data.labels import (
    CITYSCAPES_19,
    CITYSCAPES_LABELID_OF_TRAINID_19,
    SYNTHIA_16_FROM_19,
    LabelSet,
    get_label_set,
)
from diga.evaluation.inference import InferenceConfig, check_image_size, predict_logits
from diga.evaluation.visualize import overlay
from diga.models.loading import load_segmentor, resolve_device

register_resolvers()
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def cityscapes_label_ids(label_set: LabelSet) -> np.ndarray | None:
    """train-id → Cityscapes labelId table (255 → 0 'unlabeled'); None for non-Cityscapes label spaces."""
    if label_set.name == "cityscapes19":
        ids = CITYSCAPES_LABELID_OF_TRAINID_19
    elif label_set.name == "synthia16":
        ids = tuple(CITYSCAPES_LABELID_OF_TRAINID_19[i] for i in SYNTHIA_16_FROM_19)
    else:
        return None
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(ids)] = ids
    assert len(ids) == label_set.num_classes and label_set.classes[0] == CITYSCAPES_19[0]
    return lut


class PredictionFailures(RuntimeError):
    """Some images could not be predicted (the others were written); the message lists them."""


def check_paths(input_path: Path, output_dir: Path) -> None:
    """Outputs written into the input folder would be read as inputs by the next run: refuse before loading anything."""
    inp, out = input_path.resolve(), output_dir.resolve()
    if out == inp or out.is_relative_to(inp):
        raise DatasetError(f"output={output_dir}: must not be input={input_path} or a folder inside it (the "
                           "predictions would mix with the images); choose another output folder")  # fmt: skip
    if not input_path.exists():
        raise DatasetError(f"{input_path}: input image or folder does not exist")
    if input_path.is_file() and input_path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(f"{input_path}: not a .png/.jpg/.jpeg image (input= takes an image or a folder of images)")


def input_images(input_path: Path) -> tuple[list[Path], Path]:
    """The images to predict and the folder their output paths are relative to: one file, or a folder's images."""
    if input_path.is_file():
        return [input_path], input_path.parent
    return sorted(p for p in input_path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES), input_path


def output_stems(files: list[Path], input_dir: Path, output_dir: Path) -> dict[Path, Path]:
    """Where each image's outputs go: `<relative path without suffix>`, plus the suffix for names that would clash
    (`a.jpg` and `a.png` → `a.jpg_…` and `a.png_…`)."""
    rel = {p: p.relative_to(input_dir) for p in files}
    counts: dict[Path, int] = {}
    for r in rel.values():
        counts[r.with_suffix("")] = counts.get(r.with_suffix(""), 0) + 1
    return {p: output_dir / (r.with_suffix("") if counts[r.with_suffix("")] == 1 else r) for p, r in rel.items()}


def predict_folder(ckpt: str | Path, input_path: str | Path, output_dir: str | Path, inference: InferenceConfig,
                   device: str = "auto", alpha: float = 0.5) -> list[Path]:  # fmt: skip
    """Predict one image or every image of a folder; one that fails (too small, unreadable) is reported at the end,
    the others are written."""
    input_path, output_dir = Path(input_path), Path(output_dir)
    check_paths(input_path, output_dir)
    model, label_set_name = load_segmentor(ckpt)
    label_set = get_label_set(label_set_name)
    dev = resolve_device(device)
    model.to(dev).eval()
    inference = inference.for_device(dev)
    files, input_dir = input_images(input_path)
    if not files:
        raise DatasetError(f"{input_path}: no .png/.jpg images found")
    lut = cityscapes_label_ids(label_set)
    written, failed = [], []
    for path, stem in progress_items(output_stems(files, input_dir, output_dir).items()):
        try:
            image = read_rgb(path)
            check_image_size(image.shape[0], image.shape[1], model.min_input_side, inference, str(path))
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(dev)
            with torch.no_grad():
                pred = predict_logits(model, x, inference, model.num_classes).argmax(1)[0].cpu().numpy()
        except (DatasetError, ValueError) as e:
            failed.append(str(e))
            continue
        pred = pred.astype(np.uint8)
        save_label_png(f"{stem}_trainIds.png", pred, label_set.palette_bytes())
        if lut is not None:
            save_label_png(f"{stem}_labelIds.png", lut[pred])
        save_png(f"{stem}_color.png", overlay(image, pred, label_set, alpha))
        written.append(Path(f"{stem}_trainIds.png"))
    if failed:
        raise PredictionFailures(f"{len(failed)} of {len(files)} images were not predicted ({len(written)} written to "
                                 f"{output_dir}):\n  " + "\n  ".join(failed))  # fmt: skip
    return written


def progress_items(items: Iterable[tuple[Path, Path]]) -> Iterator[tuple[Path, Path]]:
    from diga.utils.progress import progress

    listed = list(items)
    return progress(listed, len(listed), "predicting")


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from diga.data.io import DatasetError
    from diga.models.weights import WeightFileError
    from diga.utils.errors import exit_on_user_error

    inf = InferenceConfig.from_config(cfg.inference)
    # a missing/unreadable checkpoint or input, a bad output: exit 2; some images not predicted: exit 1
    with exit_on_user_error((DatasetError, WeightFileError)), exit_on_user_error((PredictionFailures,), code=1):
        written = predict_folder(cfg.ckpt, cfg.input, cfg.output, inf, cfg.device, cfg.overlay_alpha)
    print(f"wrote {len(written)} predictions to {cfg.output}")


if __name__ == "__main__":
    main()
