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
    assert ToySpec(instance_colors="fixed").folder_name() == "80x160-c9cac40ce8"  # the first pair, unchanged
    assert ToySpec().folder_name() != ToySpec(instance_colors="fixed").folder_name()
