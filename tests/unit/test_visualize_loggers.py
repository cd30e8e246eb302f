"""Images and tables reach W&B and TensorBoard alike (`diga.evaluation.visualize`); csv and none get nothing."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from diga.data.labels import get_label_set
from diga.evaluation import visualize as vis

LABELS = get_label_set("toy")


def read_events(log_dir: Path) -> dict[str, list[tuple[int, object]]]:
    """{tag: [(step, summary value), …]} of every event file under `log_dir` (TFRecord framing: length, its CRC,
    the Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, object]]] = {}
    for path in sorted(log_dir.rglob("events.out.tfevents*")):
        raw, pos = path.read_bytes(), 0
        while pos < len(raw):
            (n,) = struct.unpack("<Q", raw[pos : pos + 8])
            event = event_pb2.Event.FromString(raw[pos + 12 : pos + 12 + n])
            pos += 12 + n + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value))
    return out


def decoded(value: object) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)).convert("RGB"))  # type: ignore[attr-defined]


def val_entry(n: int = 2, h: int = 4, w: int = 6) -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    return {
        "set": "toy_target",
        "image": torch.rand(n, 3, h, w, generator=g),
        "pred": torch.randint(0, LABELS.num_classes, (n, h, w), generator=g),
        "label": torch.randint(0, LABELS.num_classes, (n, h, w), generator=g),
    }


def class_results() -> tuple[dict[str, dict[str, float]], dict[str, torch.Tensor]]:
    results = {"toy_target": {f"iou/{c}": 10.0 * i + 0.125 for i, c in enumerate(LABELS.classes)}}
    return results, {"toy_target": torch.eye(LABELS.num_classes, dtype=torch.long)}


@pytest.fixture
def tb(tmp_path: Path) -> TensorBoardLogger:
    return TensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="", default_hp_metric=False)


def test_tensorboard_gets_prediction_panels_and_class_tables(tb: TensorBoardLogger) -> None:
    entry = val_entry()
    # a list as modules pass it (`self.loggers`), with a logger that takes no images first
    loggers = [CSVLogger(save_dir=str(Path(tb.log_dir).parent), name="csv"), tb]
    vis.log_segmentation_images(loggers, "val/predictions", [entry], LABELS, step=7)
    vis.log_class_tables(loggers, *class_results(), LABELS, step=7)
    tb.finalize("success")
    events = read_events(Path(tb.log_dir))

    for i in range(2):
        ((step, value),) = events[f"val/predictions/toy_target_{i}"]
        expected = vis.panel(entry["image"][i], entry["label"][i], entry["pred"][i], LABELS)  # type: ignore[index]
        assert step == 7 and expected.shape == (4, 18, 3)
        np.testing.assert_array_equal(decoded(value), expected)  # image | GT | prediction, in the palette's colours
    ((_, text),) = events["val/per_class_iou/text_summary"]
    table = text.tensor.string_val[0].decode()  # type: ignore[attr-defined]
    assert table.splitlines()[0] == "| class | toy_target |"
    assert f"| {LABELS.classes[2]} | 20.12 |" in table
    ((_, heatmap),) = events["val/confusion_matrix/toy_target"]
    assert decoded(heatmap).ndim == 3 and decoded(heatmap).shape[0] > 50


def test_tensorboard_gets_view_rows(tb: TensorBoardLogger) -> None:
    x, y = torch.rand(3, 3, 4, 5), torch.randint(0, LABELS.num_classes, (3, 4, 5))
    views = {"aug": torch.rand(3, 3, 4, 5)}
    vis.log_views(tb, "train/views", x, y, views, torch.randn(3, LABELS.num_classes, 4, 5), LABELS, step=3)
    rows = [[np.zeros((4, 5, 3), np.uint8), np.full((4, 5, 3), 255, np.uint8)]]
    vis.log_image_rows([tb], "train/translation", rows, "source | target", step=3)
    tb.finalize("success")
    events = read_events(Path(tb.log_dir))

    assert sorted(t for t in events if t.startswith("train/views")) == ["train/views/0", "train/views/1"]  # max 2
    assert decoded(events["train/views/0"][0][1]).shape == (4, 4 * 5, 3)  # source | A(x) | GT | prediction
    np.testing.assert_array_equal(decoded(events["train/translation/source_target"][0][1]), np.concatenate(rows[0], 1))


def test_wandb_calls_are_as_before() -> None:
    """W&B keeps its masks and its table (one `log_image` per key, the raw image under the masks)."""
    wandb = mock.create_autospec(WandbLogger, instance=True)
    entry = val_entry(n=1)
    vis.log_segmentation_images(wandb, "val/predictions", [entry], LABELS, step=5)
    vis.log_class_tables([wandb], *class_results(), LABELS, step=5)

    first, second = wandb.log_image.call_args_list
    assert first.kwargs["key"] == "val/predictions" and first.kwargs["caption"] == ["toy_target #0"]
    np.testing.assert_array_equal(first.kwargs["images"][0], vis.to_uint8_hwc(entry["image"][0]))  # type: ignore[index]
    assert set(first.kwargs["masks"][0]) == {"prediction", "ground_truth"} and first.kwargs["step"] == 5
    assert second.kwargs["key"] == "val/confusion_matrix" and second.kwargs["caption"] == ["toy_target"]
    wandb.log_table.assert_called_once()
    assert wandb.log_table.call_args.kwargs["columns"] == ["class", "toy_target"]


@pytest.mark.parametrize("loggers", [None, [], "csv"])
def test_loggers_without_images_get_nothing(tmp_path: Path, loggers: object) -> None:
    loggers = [CSVLogger(save_dir=str(tmp_path))] if loggers == "csv" else loggers
    with mock.patch.object(vis, "confusion_matrix_png", side_effect=AssertionError("drew a heatmap for nobody")):
        vis.log_class_tables(loggers, *class_results(), LABELS, step=1)  # type: ignore[arg-type]
    vis.log_segmentation_images(loggers, "val/predictions", [val_entry()], LABELS, step=1)  # type: ignore[arg-type]
    vis.log_image_rows(loggers, "k", [[np.zeros((2, 2, 3), np.uint8)]], "c", step=1)  # type: ignore[arg-type]
    assert not list(tmp_path.rglob("*.csv"))  # the CSV logger was never written to


def test_tensorboard_tags_name_images_by_caption_when_it_tells_them_apart() -> None:
    tags = vis.tensorboard_tags("val/predictions", ["cs #0", "cs #1"])
    assert tags == ["val/predictions/cs_0", "val/predictions/cs_1"]
    assert vis.tensorboard_tags("train/views", ["a | b", "a | b"]) == ["train/views/0", "train/views/1"]


def test_tensorboard_logger_config_writes_into_the_run_folder(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    from tests.helpers import compose_cfg

    cfg = compose_cfg(["experiment=toy", "logger=[csv,tensorboard]", f"paths.output_dir={tmp_path}/run"])
    assert list(cfg.logger) == ["csv", "tensorboard"]
    logger = instantiate(cfg.logger.tensorboard)
    assert isinstance(logger, TensorBoardLogger) and Path(logger.log_dir) == tmp_path / "run" / "tensorboard"


def test_a_resumed_tensorboard_run_purges_the_steps_it_logs_again(tmp_path: Path) -> None:
    """After a resume from step 3, the new event file starts with a purge marker at step 3 (TensorBoard then hides
    the interrupted run's events from step 3 on), and the earlier file keeps steps 0-4."""
    from tensorboardX.proto import event_pb2

    from diga.loggers import ResumableTensorBoardLogger

    def logger(suffix: str) -> ResumableTensorBoardLogger:  # event files are named by the second they start in
        return ResumableTensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="",
                                          default_hp_metric=False, filename_suffix=suffix)  # fmt: skip

    first = logger(".first")
    for step in range(5):
        first.log_metrics({"loss": float(step)}, step=step)
    first.finalize("success")
    resumed = logger(".resumed")
    resumed.resume_from_step(3)
    resumed.log_metrics({"loss": 3.5}, step=3)
    resumed.finalize("success")
    with pytest.raises(RuntimeError, match="before the first event"):
        resumed.resume_from_step(4)

    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents*"))) == 2
    raw, starts = next((tmp_path / "tensorboard").glob("*.resumed")).read_bytes(), []
    pos = 0
    while pos < len(raw):
        (n,) = struct.unpack("<Q", raw[pos : pos + 8])
        event = event_pb2.Event.FromString(raw[pos + 12 : pos + 12 + n])
        pos += 12 + n + 4
        if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
            starts.append(event.step)
    assert starts == [3]
    assert [s for s, _ in read_events(tmp_path / "tensorboard")["loss"]] == [0, 1, 2, 3, 4, 3]
