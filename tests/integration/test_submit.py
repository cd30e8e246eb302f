"""`diga.submit`: a benchmark's test split predicted into its server's layout, on fake trees in the official layouts."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from diga.data.fake_trees import street_painter, write_acdc, write_dark_zurich
from diga.data.io import DatasetError
from diga.evaluation.inference import InferenceConfig
from diga.evaluation.submission import FORMATS, prediction_files
from diga.submit import write_submission
from tests.helpers import compose_cfg


@pytest.fixture(scope="module")
def cityscapes_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 19-class SegFormer-B0, exported as diga exports a stage's model."""
    cfg = compose_cfg(["experiment=cs2acdc", "stage=source_only", "model=segformer_b0", "model.pretrained=null"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    torch.manual_seed(0)
    model = instantiate(model_cfg, _convert_="all")
    path = tmp_path_factory.mktemp("model") / "final_model.pt"
    torch.save({"model_cfg": model_cfg, "label_set": "cityscapes19", "state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ACDC and Dark Zurich street scenes at 1/14 of 1920×1080 (large enough for the encoder), 2 frames per folder."""
    root = tmp_path_factory.mktemp("data")
    paint = street_painter(scale=1 / 14)
    write_acdc(root / "acdc", 2, paint)
    write_dark_zurich(root / "dark_zurich", 2, paint)
    return root


def _data(name: str, fake_root: Path) -> dict:
    cfg = compose_cfg(["experiment=cs2acdc", "stage=source_only", f"paths.data_dir={fake_root}",
                       f"data@datamodule.target={name}"])  # fmt: skip
    return OmegaConf.to_container(cfg.datamodule.target, resolve=True)


def test_acdc_submission_holds_one_train_id_png_per_test_image_at_its_size(cityscapes_model: Path, fake_root: Path,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "acdc"
    archive = write_submission(cityscapes_model, _data("acdc", fake_root), FORMATS["acdc"], out, InferenceConfig(),
                               device="cpu", allow_partial=True)  # fmt: skip
    tests = sorted((fake_root / "acdc" / "rgb_anon").glob("*/test/*/*_rgb_anon.png"))
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
    assert names == sorted(f"{p.stem}.png" for p in tests)  # flat; no reference images; every condition
    label = np.asarray(Image.open(out / names[0]))
    assert label.dtype == np.uint8 and label.shape == Image.open(tests[0]).size[::-1] and label.max() < 19


def test_dark_zurich_submission_has_three_folders_and_a_16_bit_confidence(cityscapes_model: Path, fake_root: Path,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "dz"
    archive = write_submission(cityscapes_model, _data("dark_zurich", fake_root), FORMATS["dark_zurich"], out,
                               InferenceConfig(), device="cpu", allow_partial=True)  # fmt: skip
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
    stems = [p.stem for p in (fake_root / "dark_zurich" / "rgb_anon" / "test" / "night").glob("*/*.png")]
    assert names == {f"{d}/{s}.png" for d in ("labelTrainIds", "labelTrainIds_invalid", "confidence") for s in stems}
    confidence = np.asarray(Image.open(out / "confidence" / f"{stems[0]}.png"))
    assert confidence.dtype == np.uint16 and confidence.min() >= 65535 // 19  # a max softmax over 19 classes


def test_a_partial_test_split_is_refused_before_any_prediction(cityscapes_model: Path, fake_root: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    with pytest.raises(DatasetError, match="expects 2000"):
        write_submission(cityscapes_model, _data("acdc", fake_root), FORMATS["acdc"], tmp_path / "x",
                         InferenceConfig(), device="cpu")  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_prediction_files_encode_by_hand() -> None:
    """Train-ids as they are for ACDC; Cityscapes label ids for Cityscapes' server; confidence scaled to 16 bits."""
    pred = np.array([[0, 18], [13, 8]], np.uint8)
    acdc = prediction_files(FORMATS["acdc"], "a_rgb_anon", pred)
    assert list(acdc) == ["a_rgb_anon.png"]
    city = prediction_files(FORMATS["cityscapes"], "x_leftImg8bit", pred)
    assert np.asarray(Image.open(io.BytesIO(city["x_leftImg8bit.png"]))).tolist() == [[7, 33], [26, 21]]
    dz = prediction_files(FORMATS["dark_zurich"], "d", pred, np.array([[1.0, 0.5], [0.0, 2.0]]))
    assert np.asarray(Image.open(io.BytesIO(dz["confidence/d.png"]))).tolist() == [[65535, 32768], [0, 65535]]
    with pytest.raises(ValueError, match="confidence"):
        prediction_files(FORMATS["dark_zurich"], "d", pred)


def test_the_command_takes_its_format_from_the_dataset(cityscapes_model: Path, fake_root: Path, tmp_path: Path) -> None:
    """`data=acdc_fog` is ACDC (one condition): the ACDC layout, in the run's own folder; a dataset without a server
    format is refused with the formats there are."""
    cmd = [sys.executable, "-m", "diga.submit", f"ckpt={cityscapes_model}", "data=acdc_fog", "allow_partial=true",
           f"paths.data_dir={fake_root}", f"hydra.run.dir={tmp_path / 'run'}", "device=cpu"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(tmp_path / "run" / "acdc_submission.zip") as zf:
        assert sorted(zf.namelist()) == ["GOPR0475_frame_000000_rgb_anon.png", "GOPR0475_frame_000001_rgb_anon.png"]
    cmd[4] = "data=bdd100k"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "no evaluation server format for this dataset" in proc.stderr
