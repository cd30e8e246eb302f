"""The dataset check: every problem a user's download can have is found, named by file, and counted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diga.data.check import check_split, file_list_hash
from diga.data.datasets import GTA5, Cityscapes
from diga.data.fake_trees import save_png
from tests import fakes


def _gta(root: Path, n: int = 5) -> Path:
    fakes.make_gta5(root / "GTA5", n)
    return root / "GTA5"


def test_clean_split_has_no_errors_and_reports_the_official_difference(tmp_path: Path) -> None:
    report = check_split(GTA5(_gta(tmp_path)), decode=True)
    assert report.ok and report.decoded == 5 and report.errors == []
    assert report.official_images == 24966 and report.official is False
    assert report.counts["missing_official"] == 24966 - 5 and report.missing_official[0] == "00006"
    assert report.extra_official == []


def test_every_kind_of_broken_file_is_found_and_named(tmp_path: Path) -> None:
    root = _gta(tmp_path, 6)
    (root / "images" / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt image
    (root / "labels" / "00003.png").unlink()  # image without label
    save_png(root / "labels" / "00004.png", np.zeros((7, 9), np.uint8))  # label of another size
    save_png(root / "labels" / "00005.png", np.full((fakes.H, fakes.W), 200, np.uint8))  # ids outside 0..33
    save_png(root / "labels" / "09999.png", np.zeros((4, 4), np.uint8))  # label without image
    (root / "images" / "extra_frame.png").write_bytes((root / "images" / "00001.png").read_bytes())
    save_png(root / "labels" / "extra_frame.png", np.zeros((fakes.H, fakes.W), np.uint8))
    report = check_split(GTA5(root), decode=True, workers=2)
    assert not report.ok
    assert report.missing_labels == [str(root / "labels" / "00003.png")]
    assert report.unpaired_labels == [str(root / "labels" / "09999.png")]
    assert report.extra_official == ["extra_frame"]
    by_file = {e.split(":")[0]: e for e in report.errors}
    assert "corrupt or truncated" in by_file[str(root / "images" / "00002.png")]
    assert "does not match image" in by_file[str(root / "labels" / "00004.png")]
    assert "outside the id range 0..33" in by_file[str(root / "labels" / "00005.png")]
    assert len(report.errors) == 3  # the missing label is reported once, as missing


def test_file_list_hash_is_independent_of_the_root_and_sees_a_renamed_file(tmp_path: Path) -> None:
    a, b = _gta(tmp_path / "a"), _gta(tmp_path / "b")
    assert file_list_hash(GTA5(a)) == file_list_hash(GTA5(b))
    for sub in ("images", "labels"):
        (b / sub / "00005.png").rename(b / sub / "00055.png")
    assert file_list_hash(GTA5(a)) != file_list_hash(GTA5(b))


def test_a_list_file_subset_is_not_compared_with_the_official_count(tmp_path: Path) -> None:
    root = _gta(tmp_path)
    (tmp_path / "list.txt").write_text("00001.png\n00002.png\n")
    report = check_split(GTA5(root, list_file=tmp_path / "list.txt"), decode=False)
    assert report.images == 2 and report.restricted_by == "list_file" and report.official_images is None
    assert report.decoded == 0 and report.missing_official == []


def test_cityscapes_official_counts_per_split(tmp_path: Path) -> None:
    fakes.make_cityscapes(tmp_path / "cityscapes", n_train=4, n_val=2)
    train = check_split(Cityscapes(tmp_path / "cityscapes", split="train"), decode=False)
    val = check_split(Cityscapes(tmp_path / "cityscapes", split="val"), decode=False)
    assert (train.images, train.official_images, val.images, val.official_images) == (4, 2975, 2, 500)


@pytest.mark.parametrize("broken", [False, True])
def test_check_data_command_writes_the_report_and_fails_on_errors(tmp_path: Path, toy_root: Path,
                                                                  broken: bool) -> None:  # fmt: skip
    fakes.make_gta5(tmp_path / "data" / "GTA5", 3)
    fakes.make_cityscapes(tmp_path / "data" / "cityscapes", n_train=3, n_val=2)
    if broken:
        (tmp_path / "data" / "cityscapes" / "leftImg8bit" / "val" / "aachen" /
         "aachen_000000_000019_leftImg8bit.png").write_bytes(b"not a png")  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "diga.check_data", "experiment=gta2cs", f"paths.root_dir={tmp_path}",
                           f"paths.data_dir={tmp_path / 'data'}", "hydra.run.dir=" + str(tmp_path / "out"),
                           "datamodule.val.cityscapes.loader.eval_resize=[64,128]"],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == (1 if broken else 0), proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "data_check.json").read_text())
    roles = [(s["dataset"], s["split"]) for s in report["splits"]]
    assert roles == [("GTA5", "train"), ("Cityscapes", "train"), ("Cityscapes", "val")]
    assert [s["official_images"] for s in report["splits"]] == [24966, 2975, 500]
    assert report["splits"][2]["ok"] is not broken
    assert ("aachen_000000_000019_leftImg8bit.png: corrupt or truncated image" in proc.stdout) is broken


def test_native_evaluation_images_too_small_for_two_scale_inference_are_named(tmp_path: Path) -> None:
    fakes.make_cityscapes(tmp_path / "cityscapes", n_train=1, n_val=1)  # 24×40: below 64 (32 at scale 0.5)
    report = check_split(Cityscapes(tmp_path / "cityscapes", split="val"), min_side=64)
    assert report.errors and "smaller than the model's minimum side 64" in report.errors[0]
