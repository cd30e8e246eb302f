"""`diga.predict`: label PNGs (train-ids, Cityscapes label ids) and overlays for a folder or one image, sliding window
on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diga.data.io import DatasetError
from diga.data.labels import get_label_set
from diga.evaluation.inference import InferenceConfig
from diga.predict import cityscapes_label_ids, predict_folder


def test_cityscapes_label_id_tables() -> None:
    lut = cityscapes_label_ids(get_label_set("cityscapes19"))
    assert lut[0] == 7 and lut[10] == 23 and lut[18] == 33 and lut[255] == 0
    lut16 = cityscapes_label_ids(get_label_set("synthia16"))
    assert lut16[9] == 23 and lut16[13] == 28  # sky, bus in the 16-class order
    assert cityscapes_label_ids(get_label_set("toy")) is None


def test_predict_folder(tmp_path: Path, toy_root: Path, trained_toy_run: Path) -> None:
    images = next(toy_root.glob("*/target/val/images"))
    inf = InferenceConfig(mode="slide", crop_size=(32, 32), stride=(24, 24))
    written = predict_folder(trained_toy_run / "final_model.pt", images, tmp_path / "pred", inf, device="cpu")
    assert len(written) == 4
    lab = Image.open(written[0])
    assert lab.mode == "P" and lab.size == (64, 32)
    assert set(np.unique(np.asarray(lab))) <= set(range(7))
    assert (tmp_path / "pred" / "00000_color.png").is_file()
    assert not (tmp_path / "pred" / "00000_labelIds.png").exists()  # toy labels have no Cityscapes ids
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"empty: no \.png/\.jpg images"):
        predict_folder(trained_toy_run / "final_model.pt", empty, tmp_path / "x", inf)


def test_predict_keeps_same_stem_outputs_and_reports_bad_images(
    tmp_path: Path, toy_root: Path, trained_toy_run: Path
) -> None:
    import shutil

    from diga.predict import PredictionFailures

    src = next(toy_root.glob("*/target/val/images")) / "00000.png"
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(src, folder / "a.png")
    Image.open(src).convert("RGB").save(folder / "a.jpg")
    Image.fromarray(np.zeros((16, 600, 3), np.uint8)).save(folder / "thin.png")  # too small for MiT's stride 32
    out = tmp_path / "pred"
    with pytest.raises(PredictionFailures) as err:
        predict_folder(trained_toy_run / "final_model.pt", folder, out, InferenceConfig(), device="cpu")
    assert "thin.png: 600×16 is too small" in str(err.value) and "at least 32 pixels" in str(err.value)
    assert (out / "a.png_trainIds.png").is_file() and (out / "a.jpg_trainIds.png").is_file()  # both kept


def test_predict_refuses_an_output_that_is_or_is_inside_the_input(tmp_path: Path, toy_root: Path) -> None:
    images = next(toy_root.glob("*/target/val/images"))
    for out in (images, images / "pred"):  # before the checkpoint is read: it need not exist
        with pytest.raises(DatasetError, match=r"output=.*: must not be input=.* or a folder inside it"):
            predict_folder(tmp_path / "nope.pt", images, out, InferenceConfig())
    assert not (images / "pred").exists()


def test_predict_one_image_file(tmp_path: Path, toy_root: Path, trained_toy_run: Path) -> None:
    image = next(toy_root.glob("*/target/val/images")) / "00001.png"
    written = predict_folder(trained_toy_run / "final_model.pt", image, tmp_path / "pred", InferenceConfig(),
                             device="cpu")  # fmt: skip
    assert written == [tmp_path / "pred" / "00001_trainIds.png"] and written[0].is_file()
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["00001_color.png", "00001_trainIds.png"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"notes\.txt: not a \.png/\.jpg/\.jpeg image"):
        predict_folder(trained_toy_run / "final_model.pt", tmp_path / "notes.txt", tmp_path / "p2", InferenceConfig())


def test_onnx_export_matches_pytorch(tmp_path: Path, trained_toy_run: Path) -> None:
    import onnxruntime as ort
    import torch

    from diga.export import LogitsAtInputSize, export_onnx
    from diga.models.loading import load_segmentor

    ckpt, out = trained_toy_run / "final_model.pt", tmp_path / "model.onnx"
    diff = export_onnx(ckpt, out, height=32, width=64)
    assert diff < 1e-3
    model, _ = load_segmentor(ckpt)
    x = torch.rand(2, 3, 32, 64)  # another input, batch 2: the dynamic batch axis works
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        ref = LogitsAtInputSize(model)(x).numpy()
    assert got.shape == (2, 7, 32, 64)
    assert abs(got - ref).max() < 1e-3
