"""A folder of one's own unlabelled images as the target: DAFormer/MIC and DiGA's pipeline adapt to it, no target label
is read, and the run ends with prediction pictures of target images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diga.tasks import run_task
from tests.helpers import compose_cfg, tiny_pipeline_overrides, tiny_toy_overrides


def own_images(toy_root: Path, folder: Path) -> Path:
    """The toy's target training images as a user's camera folder: nested, JPEG and PNG, one of another size, and
    no label anywhere (the toy's label folders are not copied)."""
    images = sorted(toy_root.glob("*/target/train/images/*.png"))[:8]
    for i, src in enumerate(images):
        dst = folder / ("cam_a" if i < 4 else "cam_b/day") / f"{i:04d}{'.jpg' if i % 2 else '.png'}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(src).convert("RGB")
        (image.resize((image.width + 16, image.height + 8)) if i == 4 else image).save(dst)
    return folder


def folder_target(tmp_path: Path, toy_root: Path) -> list[str]:
    root = own_images(toy_root, tmp_path / "my_images")
    return ["data@datamodule.target=folder", f"datamodule.target.root={root}", "~datamodule.target.domain",
            "datamodule.target.loader.streams=[{resize:null,batch_size:2}]",
            "datamodule.target.loader.random_scale=null", "datamodule.target_diagnostic_labels=false",
            "~datamodule.val.toy_target", "target_previews=3"]  # fmt: skip


def test_daformer_adapts_to_a_folder_and_leaves_previews(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=daformer",
                       *folder_target(tmp_path, toy_root)])  # fmt: skip
    assert not cfg.datamodule.val
    run_task(cfg)
    previews = sorted((tmp_path / "run" / "previews").glob("*.png"))
    assert [p.stem for p in previews] == ["cam_a__0000", "cam_b__day__0004", "cam_b__day__0007"]  # spread over the set
    panel = np.asarray(Image.open(previews[1]))
    assert panel.shape == (32 + 8, 3 * (64 + 16), 3)  # image | prediction | overlay, at the image's own size


@pytest.mark.slow
def test_the_diga_pipeline_adapts_to_a_folder_without_labels(tmp_path: Path, toy_root: Path) -> None:
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), *tiny_pipeline_overrides(refine_rounds=0),
                       *folder_target(tmp_path, toy_root), "stage.oracle=false", "stage.baseline=false",
                       "stage.translator=fourier"])  # fmt: skip
    run_task(cfg)
    run = tmp_path / "run"
    assert (run / "predictions.png").is_file()  # target images, one column per stage, no ground truth
    assert len(list(run.glob("*selftrain*/previews/*.png"))) == 3
    # the model the pipeline hands on, for diga.predict on new images
    assert (run / "final_model.pt").resolve() == next(run.glob("*_selftrain/final_model.pt")).resolve()
