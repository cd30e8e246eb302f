"""`data=folder`: every image under a root as a domain; labels read through a class map that must fit the label set."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig
from PIL import Image

from diga.config.value_checks import value_problems
from diga.data.datasets import ImageFolder
from diga.data.io import DatasetError
from diga.data.labels import get_label_set
from tests.helpers import compose_cfg

CITYSCAPES = get_label_set("cityscapes19")
ROAD, CAR = CITYSCAPES.classes.index("road"), CITYSCAPES.classes.index("car")


def _image(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _values(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nested folders, mixed sizes and extensions, a hidden file, and a non-image file."""
    root = tmp_path / "imgs"
    _image(root / "cam_b" / "night" / "0001.png", 30, 40, 1)
    _image(root / "cam_a" / "0002.jpg", 24, 48, 2)
    _image(root / "cam_a" / "0001.JPEG", 20, 20, 3)
    _image(root / "top.webp", 16, 32, 4)
    _image(root / ".thumbs" / "x.png", 8, 8, 5)
    (root / "notes.txt").write_text("not an image")
    return root


def test_every_image_at_any_depth_sorted_with_flat_unique_names(folder: Path) -> None:
    ds = ImageFolder(folder, label_set="cityscapes19")
    assert [s.name for s in ds.samples] == ["cam_a__0001", "cam_a__0002", "cam_b__night__0001", "top"]
    assert [tuple(ds[i]["image"].shape) for i in range(len(ds))] == [(3, 20, 20), (3, 24, 48), (3, 30, 40),
                                                                     (3, 16, 32)]  # fmt: skip
    assert int(ds[0]["label"].max()) == 255  # unlabelled
    assert [s.name for s in ImageFolder(folder, label_set="cityscapes19").samples] == [s.name for s in ds.samples]


def test_two_images_of_one_name_and_an_empty_folder_are_named(folder: Path, tmp_path: Path) -> None:
    _image(folder / "cam_a" / "0002.png", 8, 8, 6)
    with pytest.raises(DatasetError, match=r"0002\.(png|jpg): has the same name as .*0002\.(png|jpg)"):
        ImageFolder(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no 'train' samples found for ImageFolder"):
        ImageFolder(tmp_path / "empty")


def _labelled(tmp_path: Path) -> tuple[Path, Path]:
    root, labels = tmp_path / "imgs", tmp_path / "labels"
    _image(root / "a" / "x.jpg", 6, 8, 0)
    raw = np.zeros((6, 8), np.uint8)
    raw[:3], raw[3:, :4], raw[3:, 4:] = 1, 7, 0  # road, car, unlabelled
    _values(labels / "a" / "x.png", raw)
    return root, labels


def test_a_class_map_turns_file_values_into_the_label_sets_train_ids(tmp_path: Path) -> None:
    root, labels = _labelled(tmp_path)
    cmap = tmp_path / "classes.yaml"
    cmap.write_text("classes:\n  road: 1\n  car: {values: [7]}\nignore: [0]\n")
    ds = ImageFolder(root, labels=labels, class_map=cmap, label_set="cityscapes19")
    label = ds[0]["label"].numpy()
    assert (label[:3] == ROAD).all() and (label[3:, :4] == CAR).all() and (label[3:, 4:] == 255).all()
    cmap.write_text("classes:\n  road: 1\nignore: [0]\n")  # 7 is listed nowhere
    with pytest.raises(DatasetError, match=r"labels/a/x\.png: label values 7 are not in the class map"):
        ImageFolder(root, labels=labels, class_map=cmap, label_set="cityscapes19")[0]


def test_colour_labels_and_train_id_labels(tmp_path: Path) -> None:
    root, labels = _labelled(tmp_path)
    colours = np.zeros((6, 8, 3), np.uint8)
    colours[:3] = (128, 64, 128)
    colours[3:, :4] = (0, 0, 142)
    Image.fromarray(colours).save(labels / "a" / "x.png")
    cmap = tmp_path / "colours.yaml"
    cmap.write_text("classes:\n  road: {color: [128, 64, 128]}\n  car: {color: [0, 0, 142]}\n")  # black: ignore
    label = ImageFolder(root, labels=labels, class_map=cmap, label_set="cityscapes19")[0]["label"].numpy()
    assert (label[:3] == ROAD).all() and (label[3:, :4] == CAR).all() and (label[3:, 4:] == 255).all()
    _values(labels / "a" / "x.png", np.full((6, 8), 19, np.uint8))  # no class map: train-ids, 19 is none
    with pytest.raises(DatasetError, match=r"label ids \[19\] are neither a class id"):
        ImageFolder(root, labels=labels, label_set="cityscapes19")[0]


@pytest.fixture(scope="module")
def gta2folder() -> DictConfig:
    """gta2folder with a labelled folder of one's own as a validation set (composed once)."""
    return compose_cfg(["experiment=gta2folder", "stage=warmup", "+data@datamodule.val.mine=folder"])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("classes:\n  lamp: 3\n", "class 'lamp' is not in label set cityscapes19"),
        ("classes:\n  road: 1\n  car: 1\n", "1 is listed for 'road' and 'car'"),
        ("classes:\n  road: 1\n  car: {color: [0, 0, 142]}\n", "mixes label values and colours"),
        ("classes:\n  road: 1\nignore: [1]\n", "1 is both a class and ignored"),
        ("classes:\n  road: {color: [300, 0, 0]}\n", "a colour is \\[R, G, B\\] with integers 0..255"),
        ("road: 1\n", "a class map needs `classes:`"),
    ],
)
def test_a_class_map_that_does_not_fit_is_refused_before_training(gta2folder: DictConfig, tmp_path: Path, text: str,
                                                                  problem: str) -> None:  # fmt: skip
    cmap = tmp_path / "classes.yaml"
    cmap.write_text(text)
    cfg = gta2folder.copy()
    cfg.datamodule.val.mine.class_map = str(cmap)
    problems = value_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith(f"datamodule.val.mine.class_map: {cmap}: "), problems
    assert re.search(problem, problems[0]), problems
