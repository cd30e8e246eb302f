"""Every dataset class on a fake tree in its real layout: sample discovery, id mapping, pseudo-labels, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diga.data import labels as L
from diga.data.datasets import (
    ACDC,
    BDD100K,
    GTA5,
    Cityscapes,
    CityscapesSemi,
    DarkZurich,
    Mapillary,
    Synthia,
    ToyDataset,
)
from diga.data.fake_trees import save_png
from diga.data.io import DatasetError, save_label_png
from tests import fakes


def _to16(t: np.ndarray) -> np.ndarray:
    idx = {c19: c16 for c16, c19 in enumerate(L.SYNTHIA_16_FROM_19)}
    out = np.full_like(t, 255)
    for c19, c16 in idx.items():
        out[t == c19] = c16
    return out


@pytest.mark.parametrize(
    ("cls", "sub", "kwargs", "n", "names"),
    [
        (GTA5, "GTA5", {}, 3, ["00001", "00002", "00003"]),
        (Cityscapes, "cityscapes", {"split": "train"}, 4, None),
        (Cityscapes, "cityscapes", {"split": "val"}, 2, None),
        (Synthia, "RAND_CITYSCAPES", {}, 3, ["0000000", "0000001", "0000002"]),
        (BDD100K, "bdd100k", {"split": "val"}, 2, ["b0000", "b0001"]),
        (Mapillary, "mapillary", {"split": "validation"}, 2, ["m0000", "m0001"]),
        (ACDC, "acdc", {"split": "val"}, 8, None),
        (
            ACDC,
            "acdc",
            {"split": "train", "conditions": "night"},
            2,
            ["GOPR0351_frame_000000_rgb_anon", "GOPR0351_frame_000001_rgb_anon"],
        ),
        (
            DarkZurich,
            "dark_zurich",
            {"split": "val"},
            2,
            ["GOPR0356_frame_000000_rgb_anon", "GOPR0356_frame_000001_rgb_anon"],
        ),
    ],
)
def test_dataset_reads_real_layout_and_maps_ids(fake_root: Path, cls, sub, kwargs, n, names) -> None:
    ds = cls(fake_root / sub, **kwargs)
    assert len(ds) == n
    if names:
        assert [s.name for s in ds.samples] == names
    for i in range(n):
        item = ds[i]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, fakes.H, fakes.W)
        assert item["label"].dtype == torch.uint8  # widened to int64 on the device
        np.testing.assert_array_equal(item["label"].numpy(), fakes.truth(fakes.index_of(item["name"])))


def test_cityscapes_names_keep_image_suffix_and_city(fake_root: Path) -> None:
    ds = Cityscapes(fake_root / "cityscapes", split="train")
    assert ds.samples[0].name.endswith("_leftImg8bit")
    assert {s.image.parent.name for s in ds.samples} == {"aachen", "bochum"}


@pytest.mark.parametrize(("cls", "sub", "kwargs"), [(GTA5, "GTA5", {}), (Synthia, "RAND_CITYSCAPES", {}),
                                                    (Cityscapes, "cityscapes", {"split": "val"})])  # fmt: skip
def test_sixteen_class_label_set(fake_root: Path, cls, sub, kwargs) -> None:
    ds = cls(fake_root / sub, label_set="synthia16", **kwargs)
    for i in range(len(ds)):
        item = ds[i]
        np.testing.assert_array_equal(item["label"].numpy(), _to16(fakes.truth(fakes.index_of(item["name"]))))


def test_synthia_label_table_matches_reference() -> None:
    # REF SYNTHIALoader 16-class table
    ref = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 9, 10: 10, 17: 11, 8: 12, 19: 13, 12: 14, 11: 15}
    assert L.synthia_raw_to_trainid("synthia16") == ref
    cs16 = L.cityscapes_labelid_to_trainid("synthia16")
    assert cs16[23] == 9 and cs16[28] == 13 and 22 not in cs16 and 27 not in cs16 and 31 not in cs16


def test_mapillary_table_spot_checks() -> None:
    m = L.mapillary_to_trainid("cityscapes19")
    assert m[13] == m[24] == m[41] == 0 and m[2] == m[15] == 1 and m[20] == m[21] == m[22] == 12
    assert 8 not in m and 49 not in m and len(m) == 25


def test_semi_split_sizes_are_deterministic_and_complementary(fake_root: Path) -> None:
    root = fake_root / "cityscapes"
    lab = CityscapesSemi(root, split="train", part="labeled", ratio=2)
    unl = CityscapesSemi(root, split="train", part="unlabeled", ratio=2, with_labels=False)
    assert len(lab) == 2 and len(unl) == 2
    assert {s.name for s in lab.samples}.isdisjoint({s.name for s in unl.samples})
    again = CityscapesSemi(root, split="train", part="labeled", ratio=2)
    assert [s.name for s in again.samples] == [s.name for s in lab.samples]
    # full-size arithmetic of the reference's splits
    import math

    assert [math.ceil(2975 / r) for r in (16, 8, 4, 2)] == [186, 372, 744, 1488]


def test_semi_split_list_file(fake_root: Path, tmp_path: Path) -> None:
    root = fake_root / "cityscapes"
    names = [s.name for s in Cityscapes(root, split="train").samples]
    lst = tmp_path / "labeled.txt"
    lst.write_text(f"aachen/{names[1]}.png\n")
    ds = CityscapesSemi(root, split="train", part="labeled", split_list=str(lst))
    assert [s.name for s in ds.samples] == [names[1]]
    lst.write_text("nowhere_000000_000000_leftImg8bit\n")
    with pytest.raises(DatasetError, match=r"labeled\.txt"):
        CityscapesSemi(root, split="train", part="labeled", split_list=str(lst))


def test_target_without_labels_and_with_pseudo_labels(fake_root: Path, tmp_path: Path) -> None:
    root = fake_root / "cityscapes"
    ds = Cityscapes(root, split="train", with_labels=False)
    item = ds[0]
    assert (item["label"] == 255).all()
    pl_dir = tmp_path / "pl"
    for s in ds.samples:
        save_label_png(pl_dir / f"{s.name}.png", np.full((fakes.H // 2, fakes.W // 2), 3, np.uint8))
    ds = Cityscapes(root, split="train", with_labels=False, pseudo_label_dir=pl_dir)
    item = ds[0]
    assert item["pseudo_label"].shape == (fakes.H, fakes.W) and (item["pseudo_label"] == 3).all()


def test_toy_dataset(toy_root: Path) -> None:
    src = ToyDataset(toy_root, domain="source", split="train", spec=fakes.TINY_TOY)
    tgt = ToyDataset(toy_root, domain="target", split="val", spec=fakes.TINY_TOY)
    assert len(src) == 8 and len(tgt) == 4
    item = src[0]
    assert item["image"].shape == (3, 32, 64)
    assert set(np.unique(item["label"].numpy())) <= set(range(7)) | {255}


# --- bad input: one clear error naming the file ---------------------------------------------------------


def _copy(fake_root: Path, sub: str, tmp_path: Path) -> Path:
    dst = tmp_path / sub
    shutil.copytree(fake_root / sub, dst)
    return dst


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=str(tmp_path / "nope")):
        GTA5(tmp_path / "nope")


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "GTA5" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no 'train' samples"):
        GTA5(tmp_path / "GTA5")


def test_missing_label_names_the_file(fake_root: Path, tmp_path: Path) -> None:
    root = _copy(fake_root, "GTA5", tmp_path)
    (root / "labels" / "00002.png").unlink()
    ds = GTA5(root)
    with pytest.raises(DatasetError, match=r"labels/00002\.png: file not found"):
        ds[1]


def test_size_mismatch_names_both_files(fake_root: Path, tmp_path: Path) -> None:
    root = _copy(fake_root, "GTA5", tmp_path)
    save_png(root / "labels" / "00001.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"00001\.png: label size 10×10 does not match image"):
        GTA5(root)[0]


def test_truncated_png(fake_root: Path, tmp_path: Path) -> None:
    root = _copy(fake_root, "GTA5", tmp_path)
    p = root / "images" / "00003.png"
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(DatasetError, match=r"images/00003\.png: corrupt or truncated"):
        GTA5(root)[2]


def test_corrupt_image(fake_root: Path, tmp_path: Path) -> None:
    root = _copy(fake_root, "cityscapes", tmp_path)
    p = next((root / "leftImg8bit" / "val").rglob("*.png"))
    p.write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=p.name):
        Cityscapes(root, split="val")[0]


def test_label_ids_outside_mapping(fake_root: Path, tmp_path: Path) -> None:
    root = _copy(fake_root, "mapillary", tmp_path)
    save_png(root / "validation" / "labels" / "m0000.png", np.full((fakes.H, fakes.W), 70, np.uint8))
    with pytest.raises(DatasetError, match=r"m0000\.png: label id 70 is outside the id range 0\.\.65"):
        Mapillary(root, split="validation")[0]


def test_train_id_labels_with_unknown_ids(fake_root: Path, tmp_path: Path) -> None:
    root = _copy(fake_root, "bdd100k", tmp_path)
    save_png(root / "gtFine" / "val" / "b0000_train_id.png", np.full((fakes.H, fakes.W), 19, np.uint8))
    ds = BDD100K(root, split="val")
    # REF BDD loader: every value outside 0..18 is ignore
    assert (ds[0]["label"] == 255).all()


def test_rgb_label_is_rejected(fake_root: Path, tmp_path: Path) -> None:
    root = _copy(fake_root, "GTA5", tmp_path)
    Image.fromarray(fakes.image(0)).save(root / "labels" / "00001.png")
    with pytest.raises(DatasetError, match=r"00001\.png: label image has mode 'RGB'"):
        GTA5(root)[0]


def test_list_file_entry_without_image(fake_root: Path, tmp_path: Path) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text("00001.png\n99999.png\n")
    with pytest.raises(DatasetError, match=r"list\.txt: entry '99999'"):
        GTA5(fake_root / "GTA5", list_file=lst)


def test_acdc_keeps_each_condition_and_never_reads_the_reference_images(fake_root: Path) -> None:
    """The official tree as unpacked (no flattening): all four conditions in order, or one; `<split>_ref` images and
    the test split's missing labels are no problem; an unknown condition is named."""
    val = ACDC(fake_root / "acdc", split="val")
    assert [s.image.parts[-4] for s in val.samples] == ["fog", "fog", "night", "night", "rain", "rain", "snow", "snow"]
    assert not any("_ref" in str(s.image) for s in val.samples)
    assert len({s.name for s in val.samples}) == len(val)  # pseudo-label files are named by sample
    assert (
        val.official_count() == 406
        and ACDC(fake_root / "acdc", split="val", conditions="night").official_count() == 106
    )
    test = ACDC(fake_root / "acdc", split="test", with_labels=False)
    assert len(test) == 8 and test.official_count() == 2000
    with pytest.raises(ValueError, match="fog, night, rain, snow"):
        ACDC(fake_root / "acdc", split="val", conditions=["haze"])
    with pytest.raises(DatasetError, match="reference images"):
        ACDC(fake_root / "acdc", split="val_ref", with_labels=False)


def test_dark_zurich_trains_on_night_and_reads_day_and_twilight_on_request(fake_root: Path) -> None:
    night = DarkZurich(fake_root / "dark_zurich", split="train", with_labels=False)
    assert {s.image.parts[-3] for s in night.samples} == {"night"} and night.official_count() == 2416
    every = DarkZurich(fake_root / "dark_zurich", split="train", with_labels=False, times=["day", "twilight", "night"])
    assert len(every) == 6 and every.official_count() == 3041 + 2920 + 2416
    assert DarkZurich(fake_root / "dark_zurich", split="val").official_count() == 50
    with pytest.raises(ValueError, match="day, twilight, night"):
        DarkZurich(fake_root / "dark_zurich", times="dusk")


def test_synthia_dg_split_comes_from_robustnets_list_and_is_counted_as_official(fake_root: Path) -> None:
    """SYNTHIA's DG split is random: without RobustNet's list files it is an error naming the file to get; with them,
    each split reads its own list and `check_data` counts it against 6,580 / 2,820 frames (a swapped list shows as
    the wrong count); `train` is every frame whatever `split_dir` says."""
    from diga.data.check import check_split

    root = fake_root / "RAND_CITYSCAPES"
    with pytest.raises(DatasetError, match=r"synthia_split_val\.txt"):
        Synthia(root, split="val")
    val = Synthia(root, split="val", split_dir=root)
    train = Synthia(root, split="dg_train", split_dir=root)
    assert [s.name for s in val.samples] == ["0000000"] and [s.name for s in train.samples] == ["0000001", "0000002"]
    report = check_split(val, decode=False)
    assert (report.official_images, report.restricted_by, report.unpaired_labels) == (2820, None, [])
    assert check_split(train, decode=False).official_images == 6580
    assert len(Synthia(root, split="train", split_dir=root)) == 3  # the UDA protocol: every frame
    with pytest.raises(DatasetError, match="SYNTHIA splits are"):
        Synthia(root, split="test")
