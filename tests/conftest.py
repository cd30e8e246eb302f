"""Test environment hygiene and shared fixtures (fake dataset trees in the real on-disk layouts)."""

from __future__ import annotations

import os

os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["WANDB_SILENT"] = "true"

from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from tests import fakes

# pytest-xdist runs the suite in several workers, each with its share of the two threads the suite was written for.
# The processes that tests start keep the machine's own count (a test that compares such a process's results bit for
# bit with its own gives it this count: `OMP_NUM_THREADS=str(torch.get_num_threads())`), and their idle OpenMP
# threads sleep (spinning against the other worker's processes kept a 5-minute test running past 19 minutes)
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if XDIST_WORKERS > 1:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # not a kernel variable: the same kernels run
torch.set_num_threads(max(1, 2 // XDIST_WORKERS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (`slow(seconds=…)`, their time alone on 2 cores), so that parallel workers do not
    finish with one of them running alone; the rest keep their order."""

    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return mark.kwargs.get("seconds", 0) if mark else 0

    items.sort(key=lambda item: -seconds(item))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "disabled"))
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tree holding every fake dataset (GTA5, Cityscapes, SYNTHIA, BDD100K, Mapillary)."""
    root = tmp_path_factory.mktemp("datasets")
    fakes.make_all(root)
    return root


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diga.data.toy import ToySpec, ensure_toy_dataset

    spec = ToySpec(**fakes.TINY_TOY)
    root = tmp_path_factory.mktemp("toydata") / "toy"
    ensure_toy_dataset(root / spec.folder_name(), spec)
    return root


@pytest.fixture(scope="session")
def trained_toy_run(tmp_path_factory: pytest.TempPathFactory, toy_root: Path) -> Path:
    """One tiny source-only run, shared by every test that only needs *a* trained model (its run directory:
    final_model.pt, checkpoints/last.ckpt, results.json). Do not modify its files."""
    from diga.tasks import run_task
    from tests.helpers import compose_cfg, tiny_toy_overrides

    root = tmp_path_factory.mktemp("trained_toy")
    run_task(compose_cfg([*tiny_toy_overrides(root, toy_root.parent), "stage=source_only"]))
    GlobalHydra.instance().clear()
    return root / "run"


@pytest.fixture(scope="session")
def selftrain_inputs(tmp_path_factory: pytest.TempPathFactory, toy_root: Path) -> tuple[Path, Path]:
    """Fixed, arbitrary pseudo-labels for the tiny toy target images and initial centroids: what `stage=selftrain`
    reads, without running the stages that make them. (pseudo-label folder, centroids.pt)"""
    import numpy as np

    from diga.centroids import save_centroids
    from diga.data.datasets import ToyDataset
    from diga.data.io import save_label_png

    root = tmp_path_factory.mktemp("selftrain_inputs")
    ds = ToyDataset(toy_root, domain="target", split="train", spec=fakes.TINY_TOY, with_labels=False)
    rng = np.random.default_rng(0)
    for s in ds.samples:
        save_label_png(root / "pl" / f"{s.name}.png", rng.integers(0, 7, (32, 64)).astype(np.uint8))
    save_centroids(root / "centroids.pt", torch.randn(7, 256, generator=torch.Generator().manual_seed(0)),
                   torch.ones(7), "toy")  # fmt: skip
    return root / "pl", root / "centroids.pt"
