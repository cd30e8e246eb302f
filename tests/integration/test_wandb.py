"""W&B in offline mode: no network, no prompt; the run's files hold losses, mIoU and prediction images."""

from __future__ import annotations

from pathlib import Path

import pytest

from diga.tasks import run_task
from tests.helpers import compose_cfg, tiny_toy_overrides

_FILE_HEADER = 7  # ":W&B", magic 0xBEE1, version byte
_BLOCK = 32 * 1024  # the run file is a LevelDB-style log: records are cut at 32 KiB block edges
_RECORD_HEADER = 7  # crc32 (4), length (2), chunk type (1)


def wandb_payload(raw: bytes) -> bytes:
    """The run file's record bytes with the block framing removed.

    A record that crosses a block edge is stored in two chunks with a header between them, so a
    key can be split in the raw bytes; searching this payload instead does not depend on where the
    edges fall (which moves with the run's path length).
    """
    assert raw[:4] == b":W&B", "not a W&B run file"
    out, pos = bytearray(), _FILE_HEADER
    while pos + _RECORD_HEADER <= len(raw):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD_HEADER:  # trailer padding at the end of a block
            pos += left_in_block
            continue
        length = int.from_bytes(raw[pos + 4 : pos + 6], "little")
        out += raw[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        pos += _RECORD_HEADER + length
    return bytes(out)


def test_wandb_payload_joins_a_record_cut_at_a_block_edge() -> None:
    key = b"val/toy_target/mIoU"
    filler = b"x" * (_BLOCK - _FILE_HEADER - _RECORD_HEADER - 5)  # the first chunk fills block 0, 5 bytes into the key
    chunk = lambda data, kind: b"\0\0\0\0" + len(data).to_bytes(2, "little") + bytes([kind]) + data  # noqa: E731
    raw = b":W&B\xe1\xbe\x00" + chunk(filler + key[:5], 2) + chunk(key[5:], 4)
    assert key not in raw and key in wandb_payload(raw)


def test_offline_wandb_run_is_written(tmp_path: Path, toy_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With TensorBoard alongside, listed first (a module's `self.logger`): both get the images and tables."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=warmup",
                       "stage.module.translator.kind=fourier", "logger=[tensorboard,wandb]",
                       "trainer.log_every_n_steps=1", "log_images_every=1"])  # fmt: skip
    try:
        run_task(cfg)
    finally:
        import wandb

        wandb.finish()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "expected exactly one offline run directory"
    run_dir = runs[0]
    (data_file,) = run_dir.glob("run-*.wandb")
    # the run file is a log of protobuf records; history keys are stored as plain UTF-8 strings
    raw = wandb_payload(data_file.read_bytes())
    wanted = (
        "train/loss",
        "train/loss_kd",
        "val/toy_target/mIoU",
        "val/mIoU",
        "val/predictions",
        "train/views",
        "val/per_class_iou",
        "val/confusion_matrix",
    )
    keys = {k for k in wanted if k.encode() in raw}
    assert "train/loss" in keys and "val/toy_target/mIoU" in keys and "val/mIoU" in keys
    assert "val/predictions" in keys, "no prediction images logged"
    assert "train/views" in keys and "train/loss_kd" in keys, "warm-up views / distillation loss not logged"
    assert "val/per_class_iou" in keys and "val/confusion_matrix" in keys, "per-class table / confusion matrix missing"
    assert list((run_dir / "files" / "media" / "table").rglob("*.table.json")), "per-class IoU table file missing"
    assert list((run_dir / "files" / "media" / "images").rglob("*.png")), "image files missing"
    events = b"".join(f.read_bytes() for f in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents*"))
    tb_wanted = ("train/loss", "val/toy_target/mIoU", "val/predictions/toy_target_0", "train/views/0",
                 "val/per_class_iou", "val/confusion_matrix/toy_target")  # fmt: skip
    assert [k for k in tb_wanted if k.encode() not in events] == [], "missing from the TensorBoard events"


def test_each_stage_in_one_process_gets_its_own_wandb_run(tmp_path: Path, toy_root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An in-process pipeline runs stage after stage: each must log to a run of its own name, not the first's."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    import wandb

    try:
        for stage, extra in (("source_only", []), ("warmup", ["stage.module.translator.kind=fourier"])):
            run_task(compose_cfg([*tiny_toy_overrides(tmp_path / stage, toy_root.parent), f"stage={stage}",
                                  "logger=wandb", "trainer.log_every_n_steps=1", *extra]))  # fmt: skip
            assert wandb.run is None, f"the {stage} stage left its W&B run open"
    finally:
        wandb.finish()
    for stage in ("source_only", "warmup"):
        (run_dir,) = (tmp_path / stage / "run" / "wandb").glob("offline-run-*")
        (data_file,) = run_dir.glob("run-*.wandb")
        assert b"train/loss" in wandb_payload(data_file.read_bytes()), f"{stage}: its losses went elsewhere"
