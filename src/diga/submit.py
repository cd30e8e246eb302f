"""`python -m diga.submit ckpt=… data=acdc` — predict a benchmark's test split in its server's format and zip it.

ACDC and Dark Zurich publish no test labels; their servers score uploaded predictions. This writes every test image's
prediction (the configured inference, at the image's size) into `output/` in the layout of the dataset's server
(`diga.evaluation.submission.format_for`), then `output/<format>_submission.zip`. The test split must hold the
official number of images (a server rejects a partial upload) unless `allow_partial=true`.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from diga.config import register_resolvers
from diga.data.datamodule import DomainAdaptationDataModule
from diga.data.io import DatasetError
from diga.evaluation.inference import InferenceConfig, check_image_size, predict_logits
from diga.evaluation.submission import SubmissionFormat, format_for, prediction_files, write_archive
from diga.models.loading import load_segmentor, resolve_device
from diga.utils.hydra import to_plain
from diga.utils.io import atomic_write_bytes
from diga.utils.progress import progress

register_resolvers()


@torch.no_grad()
def write_submission(ckpt: str | Path, data_cfg: dict, fmt: SubmissionFormat, output: str | Path,
                     inference: InferenceConfig, split: str = "test", device: str = "auto",
                     allow_partial: bool = False) -> Path:  # fmt: skip
    """Every image of `split` predicted into `output` in `fmt`'s layout; returns the zip archive."""
    output = Path(output)
    dataset = DomainAdaptationDataModule.build_eval_dataset(data_cfg, split_key=split, with_labels=False)
    if fmt.test_images is not None and len(dataset) != fmt.test_images and not allow_partial:
        raise DatasetError(f"{dataset.root}: {len(dataset)} {split} images, the {fmt.name} server expects "
                           f"{fmt.test_images}; it rejects a partial upload (allow_partial=true writes one "
                           "anyway)")  # fmt: skip
    model, label_set = load_segmentor(ckpt)
    if label_set != "cityscapes19":
        raise ValueError(f"{ckpt}: a {label_set} model; the {fmt.name} server scores Cityscapes' 19 classes")
    dev = resolve_device(device)
    model.to(dev).eval()
    inference = inference.for_device(dev)
    written: list[str] = []
    for i in progress(range(len(dataset)), len(dataset), "predicting the test split"):
        item = dataset[i]
        h, w = item["image"].shape[-2:]
        check_image_size(h, w, model.min_input_side, inference, str(dataset.samples[i].image))
        x = item["image"][None].to(dev).float().div_(255)
        probabilities = predict_logits(model, x, inference, model.num_classes).softmax(1)[0]
        confidence, train_ids = probabilities.max(0)
        files = prediction_files(fmt, item["name"], train_ids.cpu().numpy(), confidence.float().cpu().numpy())
        for rel, data in files.items():
            atomic_write_bytes(output / rel, data)
        written += files
    return write_archive(output, written, output / f"{fmt.name}_submission.zip")


@hydra.main(version_base="1.3", config_path="conf", config_name="submit")
def main(cfg: DictConfig) -> None:
    from diga.models.weights import WeightFileError
    from diga.utils.errors import exit_on_user_error

    # a missing checkpoint or split, a wrong count or label set: the message names it
    with exit_on_user_error((DatasetError, WeightFileError, ValueError)):
        data = to_plain(cfg.data)
        fmt = format_for(str(data.get("_target_", "")))
        archive = write_submission(cfg.ckpt, data, fmt, cfg.output,
                                   InferenceConfig.from_config(cfg.inference), str(cfg.split), str(cfg.device),
                                   bool(cfg.allow_partial))  # fmt: skip
    print(f"wrote {archive} ({fmt.name} layout; upload it to the benchmark's server)")


if __name__ == "__main__":
    main()
