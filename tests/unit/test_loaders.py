"""What the training loaders ship per GPU: workers shared by streams, uint8 labels widened on the device, pinned
memory on CUDA, one OpenCV thread per worker, workers forked whatever the process's own start method."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from diga.data.datamodule import DomainAdaptationDataModule, split_workers, widen_labels
from diga.data.transforms import worker_init_fn
from diga.data.workers import worker_context


@pytest.mark.parametrize(
    ("total", "batches", "expected"),
    [(8, [2, 1, 2, 1], [3, 1, 3, 1]), (8, [2, 2], [4, 4]), (2, [2, 2], [1, 1]), (1, [2, 2], [1, 1]),
     (0, [2, 1], [0, 0]), (5, [3, 1], [4, 1])],
)  # fmt: skip
def test_workers_per_process_are_shared_by_the_streams(total: int, batches: list[int], expected: list[int]) -> None:
    assert split_workers(total, batches) == expected


def test_labels_travel_as_uint8_and_arrive_as_int64() -> None:
    batch = {"source": {"image": torch.zeros(1, 3, 2, 2, dtype=torch.uint8),
                        "label": torch.tensor([[[0, 255]]], dtype=torch.uint8)},
             "target": {"pseudo_label": torch.tensor([[[3, 255]]], dtype=torch.uint8), "name": ["a"]}}  # fmt: skip
    out = widen_labels(batch)
    assert out["source"]["label"].dtype == out["target"]["pseudo_label"].dtype == torch.int64
    assert out["source"]["label"].tolist() == [[[0, 255]]] and out["source"]["image"].dtype == torch.uint8


def _datamodule(pin_memory: object) -> DomainAdaptationDataModule:
    return DomainAdaptationDataModule(source={"_target_": "x"}, target=None, pin_memory=pin_memory)  # type: ignore[arg-type]


def test_memory_is_pinned_when_training_on_cuda() -> None:
    from pytorch_lightning.accelerators import CPUAccelerator, CUDAAccelerator

    dm = _datamodule("auto")
    assert not dm.pins_memory()  # no trainer: nothing to copy to
    dm.trainer = SimpleNamespace(accelerator=CUDAAccelerator())  # what Lightning's trainer holds on a GPU
    assert dm.pins_memory()
    dm.trainer = SimpleNamespace(accelerator=CPUAccelerator())
    assert not dm.pins_memory()
    assert _datamodule(True).pins_memory() and not _datamodule(False).pins_memory()


def test_worker_runs_opencv_on_one_thread() -> None:
    import cv2

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        worker_init_fn(0)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


def test_loader_workers_fork_even_in_a_spawned_process() -> None:
    """A loader's workers take the start method of its process unless told: in a `ddp_spawn` rank or an isolated
    measurement that is `spawn`, and every worker re-imported torch and diga before its first batch (11 of the
    18 s of a 2-step measured stage). The loaders name `fork` themselves."""
    import sys
    from pathlib import Path

    dm = _datamodule(False)
    loader = dm._loader(list(range(4)), batch_size=2, shuffle=False, drop_last=False, workers=1)
    assert worker_context(0) is None and dm._loader([0], 1, False, False, workers=0).multiprocessing_context is None
    if sys.platform.startswith("linux"):
        assert loader.multiprocessing_context.get_start_method() == "fork"
    # every DataLoader diga builds passes the context (the training loaders and `inference_loader`)
    src = Path(__file__).parents[2] / "src" / "diga"
    for f in src.rglob("*.py"):
        for call in f.read_text().split("DataLoader(")[1:]:
            depth, end = 1, 0
            while depth:  # the call's arguments: up to its closing parenthesis
                depth += {"(": 1, ")": -1}.get(call[end], 0)
                end += 1
            assert "multiprocessing_context" in call[:end], f"{f}: a DataLoader without multiprocessing_context"
