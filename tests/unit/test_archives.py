"""Datasets read from their official zip archives give the same samples, order and tensors as the unpacked tree."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from diga.data.archives import ArchivePath, archive_root, dataset_root
from diga.data.check import check_split
from diga.data.datasets import ACDC, BDD100K, GTA5, Cityscapes, DarkZurich, Mapillary
from diga.data.fake_archives import pack_archives
from diga.data.io import DatasetError

CASES = [  # (class, fake tree key, split, kwargs, archive wrapper)
    (GTA5, "gta5", "train", {}, None),
    (Cityscapes, "cityscapes", "val", {}, None),
    (BDD100K, "bdd100k", "val", {}, None),
    (Mapillary, "mapillary", "validation", {}, None),
    (ACDC, "acdc", "val", {}, None),
    (DarkZurich, "dark_zurich", "val", {}, "Dark_Zurich_val_anon"),  # a wrapper folder is looked through
]
FOLDER = {"gta5": "GTA5", "cityscapes": "cityscapes", "bdd100k": "bdd100k", "mapillary": "mapillary",
          "acdc": "acdc", "dark_zurich": "dark_zurich"}  # fmt: skip


@pytest.mark.parametrize(("cls", "key", "split", "kwargs", "wrapper"), CASES, ids=[c[1] for c in CASES])
def test_archives_give_the_unpacked_trees_samples_and_tensors(fake_root: Path, tmp_path: Path, cls, key, split,
                                                              kwargs, wrapper) -> None:  # fmt: skip
    tree = fake_root / FOLDER[key]
    archives = pack_archives(tree, tmp_path / key, key, wrapper)
    assert all(zipfile.is_zipfile(a) for a in archives) and not any((tmp_path / key).glob("*/"))
    unpacked = cls(tree, split=split, label_set="cityscapes19", **kwargs)
    packed = cls(tmp_path / key, split=split, label_set="cityscapes19", **kwargs)
    assert isinstance(packed.root, ArchivePath)
    assert [s.name for s in packed.samples] == [s.name for s in unpacked.samples]
    for i in range(len(unpacked)):
        a, b = unpacked[i], packed[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    # check_data: same fingerprint (paths relative to the root), every member decodes
    assert check_split(packed, workers=2).file_list_sha256 == check_split(unpacked, decode=False).file_list_sha256
    assert check_split(packed, workers=2).ok


def test_gta5_parts_are_merged_and_a_worker_reads_after_pickling(fake_root: Path, tmp_path: Path) -> None:
    archives = pack_archives(fake_root / "GTA5", tmp_path, "gta5")
    assert [a.name for a in archives] == ["01_images.zip", "01_labels.zip", "02_images.zip", "02_labels.zip"]
    ds = GTA5(tmp_path, label_set="cityscapes19")
    clone = pickle.loads(pickle.dumps(ds))  # a spawned DataLoader worker rebuilds the index from the archives
    assert torch.equal(clone[1]["image"], ds[1]["image"])
    # forked workers each open their own handles (a shared file offset would mix members up)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    assert all(torch.equal(item["image"], ds[i]["image"]) for i, item in enumerate(loader))


def test_the_unpacked_layout_wins_over_archives_beside_it(fake_root: Path) -> None:
    root = fake_root / "cityscapes"
    pack_archives(root, root, "cityscapes")  # zips next to the unpacked folders
    try:
        assert not isinstance(dataset_root(Cityscapes, root, "val", True), ArchivePath)
    finally:
        for z in root.glob("*.zip"):
            z.unlink()


def test_two_archives_holding_one_file_and_a_damaged_member_are_named(fake_root: Path, tmp_path: Path) -> None:
    archives = pack_archives(fake_root / "cityscapes", tmp_path / "dup", "cityscapes")
    with zipfile.ZipFile(archives[0]) as zf, zipfile.ZipFile(tmp_path / "dup" / "copy.zip", "w") as out:
        name = next(n for n in zf.namelist() if n.endswith(".png"))
        out.writestr(name, zf.read(name))
    with pytest.raises(DatasetError, match=r"copy\.zip|two archives hold the same file"):
        Cityscapes(tmp_path / "dup", split="val")
    bad = tmp_path / "bad"
    bad.mkdir()
    with zipfile.ZipFile(bad / "leftImg8bit_trainvaltest.zip", "w") as zf:
        zf.writestr("leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png", b"not a png")
    ds = Cityscapes(bad, split="val", with_labels=False)
    with pytest.raises(DatasetError, match=r"leftImg8bit_trainvaltest\.zip:leftImg8bit/val/aachen/.*corrupt"):
        ds[0]


def test_archive_tree_answers_glob_and_missing_paths(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("x/1/a.png", b"1")
        zf.writestr("x/2/b.png", b"2")
        zf.writestr("x/2/c.txt", b"3")
    root = archive_root(tmp_path)
    assert root is not None
    assert [p.relative_to(tmp_path).as_posix() for p in root.glob("x/*/*.png")] == ["x/1/a.png", "x/2/b.png"]
    assert [p.name for p in (root / "x").iterdir()] == ["1", "2"]
    assert (root / "x" / "2").is_dir() and (root / "x/2/b.png").is_file() and not (root / "y").exists()
    assert (root / "x/2/c.txt").read_bytes() == b"3"
    with pytest.raises(DatasetError, match="file not found in the archives"):
        (root / "x/3.png").read_bytes()
