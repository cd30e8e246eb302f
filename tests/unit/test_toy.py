"""The procedural toy benchmark: deterministic, atomic, and with a real domain gap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diga.data.toy import ToySpec, ensure_toy_dataset, render_scene
from diga.data.toy.styles import SOURCE, TARGET


def test_render_is_deterministic_and_labelled() -> None:
    a = render_scene(SOURCE, 32, 64, np.random.default_rng(3))
    b = render_scene(SOURCE, 32, 64, np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (32, 64, 3) and a[0].dtype == np.uint8
    assert {0, 2, 4}.issubset(set(np.unique(a[1])))  # road, building, sky in every scene


def test_domains_differ_in_appearance_and_layout() -> None:
    def stats(style):
        imgs, labs = zip(*(render_scene(style, 64, 128, np.random.default_rng(i)) for i in range(20)))
        imgs, labs = np.stack(imgs).astype(float), np.stack(labs)
        road = np.stack([im[lab == 0].mean(0) for im, lab in zip(imgs, labs)]).mean(0)
        sky_rows = np.mean([(lab == 4).any(1).mean() for lab in labs])
        diff = np.abs(np.diff(imgs, axis=2))
        edge = labs[:, :, 1:] != labs[:, :, :-1]
        edge_contrast = diff[edge].mean() / diff[~edge].mean()  # class boundaries vs texture/noise
        return road, sky_rows, edge_contrast

    (road_s, sky_s, sharp_s), (road_t, sky_t, sharp_t) = stats(SOURCE), stats(TARGET)
    assert np.abs(road_s - road_t).max() > 10  # colour shift
    assert sky_t > sky_s  # horizon lower in the target image: more rows reach the sky
    assert sharp_t < sharp_s / 2  # blur + noise + low contrast: class boundaries much harder to see


def test_generation_is_atomic_and_reused(tmp_path: Path) -> None:
    spec = ToySpec(height=16, width=32, source_train=2, source_val=1, target_train=2, target_val=1)
    root = ensure_toy_dataset(tmp_path / "toy", spec)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["digest"] == spec.digest()
    assert len(list((root / "target" / "train" / "images").glob("*.png"))) == 2
    mtime = (root / "meta.json").stat().st_mtime_ns
    ensure_toy_dataset(root, spec)  # same spec: nothing rewritten
    assert (root / "meta.json").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    with pytest.raises(FileExistsError, match="different settings"):
        ensure_toy_dataset(root, ToySpec(height=16, width=32, source_train=3))


def test_scenes_from_another_generator_revision_are_rendered_again(tmp_path: Path) -> None:
    """Same spec, same folder name, but scenes the current code does not draw (an edited generator): rendered anew."""
    import numpy as np
    from PIL import Image

    spec = ToySpec(height=16, width=32, source_train=2, source_val=1, target_train=2, target_val=1)
    root = ensure_toy_dataset(tmp_path / "toy", spec)
    first = root / "target" / "train" / "images" / "00000.png"
    expected = np.asarray(Image.open(first)).copy()
    Image.fromarray(255 - expected).save(first)  # what an earlier revision of the generator might have drawn
    ensure_toy_dataset(root, spec)
    assert np.array_equal(np.asarray(Image.open(first)), expected)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the stale copy is gone


def test_thing_colours_vary_per_instance_in_both_domains_unless_fixed() -> None:
    """The default pair draws every car/person colour from one shared distribution (no colour shortcut); the first
    pair (`instance_colors="fixed"`) keeps one colour per class and domain and its original folder name."""
    import numpy as np

    from diga.data.toy import ToySpec
    from diga.data.toy.generator import CAR, render_scene
    from diga.data.toy.styles import STYLES

    def car_means(varied: bool, domain: str) -> np.ndarray:
        means = []
        for i in range(30):
            img, lbl = render_scene(STYLES[domain], 80, 160, np.random.default_rng([0, 0, 0, i]), varied)
            if (lbl == CAR).sum() > 20:
                means.append(img[lbl == CAR].mean(0))
        return np.asarray(means)

    assert car_means(False, "source").std(0).mean() < 15 < car_means(True, "source").std(0).mean()
    fixed_gap = np.abs(car_means(False, "source").mean(0) - car_means(False, "target").mean(0)).max()
    varied_gap = np.abs(car_means(True, "source").mean(0) - car_means(True, "target").mean(0)).max()
    assert varied_gap < fixed_gap
    assert ToySpec(instance_colors="fixed", version=1).folder_name() == "80x160-c9cac40ce8"  # the first pair
    assert ToySpec().folder_name() != ToySpec(instance_colors="fixed").folder_name()


def test_generator_1_keeps_its_folder_names_and_labels() -> None:
    """`version=1` is the generator every earlier pair was rendered with: its folder names (digests written before the
    field existed) and its label maps stay what they were, so rendered data and published numbers stay valid."""
    import hashlib

    from diga.data.toy.styles import STYLES

    assert ToySpec(version=1).folder_name() == "80x160-a928b389e1"
    assert ToySpec(version=1, instance_colors="fixed").folder_name() == "80x160-c9cac40ce8"
    assert ToySpec(version=1, height=160, width=320).folder_name() == "160x320-fa6a33ff6a"
    assert ToySpec().version == 2 and ToySpec().folder_name() not in ("80x160-a928b389e1", "80x160-c9cac40ce8")
    labels = hashlib.sha1()
    for domain in ("source", "target"):
        for i in range(4):
            rng = np.random.default_rng([0, domain == "target", 1, i])
            labels.update(render_scene(STYLES[domain], 80, 160, rng, True, 1)[1].tobytes())
    assert labels.hexdigest()[:16] == "9d3a7f14215e3a24"  # computed with the generator before version 2 existed
    with pytest.raises(ValueError, match="version"):
        ToySpec(version=3)


def test_generator_2_draws_learnable_pedestrians() -> None:
    """Version 2's persons: in every target scene, about 4.5 % of the pixels (version 1: about 0.65 %), each
    pedestrian tall enough to span several cells of a stride-4 head yet thin, with a head, a torso and legs."""
    from diga.data.toy.generator import PERSON, SIDEWALK
    from diga.data.toy.pedestrians import HEAD, LEGS, TORSO, place_pedestrians

    def share(version: int) -> np.ndarray:
        return np.asarray([(render_scene(TARGET, 80, 160, np.random.default_rng([0, 1, 1, i]), True, version)[1]
                            == PERSON).mean() for i in range(20)])  # fmt: skip

    v2, v1 = share(2), share(1)
    assert (v2 > 0).all() and 0.03 < v2.mean() < 0.06 and v1.mean() < 0.01
    # on the bottom row (depth 1) of an 80×160 scene: 21–40 px tall, at most half as wide, head, torso and legs
    for seed in range(8):
        label = np.full((80, 160), 255, dtype=np.uint8)
        label[-1, 60:100] = SIDEWALK
        inst, parts = np.zeros((80, 160), dtype=np.int32), np.zeros((80, 160), dtype=np.uint8)
        last = place_pedestrians(label, inst, parts, SIDEWALK, PERSON, (1, 1), 0, 1, np.random.default_rng(seed)) - 1
        rows, cols = np.nonzero(inst == last)  # the nearest of a group: drawn last, never hidden
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert 21 <= height <= 40 and width <= height / 2, (seed, height, width)
        assert set(np.unique(parts[inst == last])) == {HEAD, TORSO, LEGS}
        assert (label == PERSON).sum() == (inst > 0).sum()
