"""Multi-scale fusion and sliding-window inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diga.evaluation.inference import InferenceConfig, predict_logits
from diga.models.segmentor import SegOutput


class PixelModel(nn.Module):
    """Logits = a fixed 1×1 conv of the input at stride 1 (translation-equivariant, easy to predict)."""

    def __init__(self, c: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, c, 1)

    def forward(self, x: torch.Tensor) -> SegOutput:
        y = self.conv(x)
        return SegOutput(y, y)


def test_whole_single_scale_is_plain_forward() -> None:
    m, x = PixelModel(), torch.rand(2, 3, 16, 20)
    out = predict_logits(m, x, InferenceConfig(), 3)
    torch.testing.assert_close(out, m(x).logits)


def test_two_scale_max_fusion_matches_manual() -> None:
    m, x = PixelModel(), torch.rand(1, 3, 16, 20)
    out = predict_logits(m, x, InferenceConfig(scales=(1.0, 0.5), fusion="max"), 3)
    small = F.interpolate(x, size=(8, 10), mode="bilinear", align_corners=True)
    up = F.interpolate(m(small).logits, size=(16, 20), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, torch.maximum(m(x).logits, up))


class StridedModel(nn.Module):
    """Logits at 1/4 of the input resolution, like a real segmentation head."""

    def __init__(self, c: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> SegOutput:
        y = self.conv(F.avg_pool2d(x, 4))
        return SegOutput(y, y)


def test_each_scale_is_resized_once_to_the_output_like_the_reference() -> None:
    """REF evaluate/pseudo-label: `upsample(model(x))`, `upsample(model(down(x)))`, element-wise max — the 0.5-scale
    head logits go to the output size in one interpolation (not first to the 0.5-scale input size)."""
    m, x = StridedModel(), torch.rand(1, 3, 64, 128)
    out = predict_logits(m, x, InferenceConfig(scales=(1.0, 0.5), fusion="max"), 3)
    with torch.no_grad():
        full = F.interpolate(m(x).logits, size=(64, 128), mode="bilinear", align_corners=True)
        small = F.interpolate(x, size=(32, 64), mode="bilinear", align_corners=True)
        half = F.interpolate(m(small).logits, size=(64, 128), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, torch.maximum(full, half), atol=1e-6, rtol=0)


def test_slide_equals_whole_for_pixelwise_model() -> None:
    m, x = PixelModel(), torch.rand(1, 3, 17, 23)
    cfg = InferenceConfig(mode="slide", crop_size=(8, 8), stride=(5, 6))
    torch.testing.assert_close(predict_logits(m, x, cfg, 3), m(x).logits, atol=1e-6, rtol=1e-5)


def test_batched_windows_equal_windows_one_at_a_time() -> None:
    """All windows in one forward (HRDA's batched slide) must give what one window at a time gives."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AvgPool2d(2))  # context-dependent, stride 2
    model = lambda x: SegOutput(m(x), m(x))  # noqa: E731
    x = torch.rand(2, 3, 20, 30)
    one = predict_logits(model, x, InferenceConfig(mode="slide", crop_size=(8, 12), stride=(4, 6)), 4)
    batched = predict_logits(model, x, InferenceConfig(mode="slide", crop_size=(8, 12), stride=(4, 6), batched=True), 4)
    torch.testing.assert_close(batched, one, atol=1e-6, rtol=0)


def test_batched_windows_that_run_out_of_memory_are_predicted_one_at_a_time(monkeypatch, caplog) -> None:
    import diga.evaluation.inference as inference

    monkeypatch.setattr(inference, "_OUT_OF_MEMORY", set())
    calls: list[int] = []

    def model(x: torch.Tensor) -> SegOutput:
        calls.append(x.shape[0])
        if x.shape[0] > 1:  # more than one window at once does not fit
            raise torch.OutOfMemoryError("CUDA out of memory")
        return SegOutput(x[:, :2], x[:, :2])

    cfg = InferenceConfig(mode="slide", crop_size=(8, 8), stride=(4, 4), batched=True)
    x = torch.rand(1, 3, 12, 12)
    with caplog.at_level("WARNING"):
        out = predict_logits(model, x, cfg, 2)
        predict_logits(model, x, cfg, 2)
    torch.testing.assert_close(out, x[:, :2])
    assert calls == [4, 1, 1, 1, 1, 1, 1, 1, 1]  # one batched try, then one window at a time, also in the next call
    assert sum("one window at a time" in r.message for r in caplog.records) == 1


def test_batched_windows_run_only_on_a_gpu_outside_the_memory_checked_training() -> None:
    """On the CPU a batch that does not fit is a kill, not an exception: evaluate, predict, submit, pseudo-labels and
    the pipeline's pictures take one window at a time there (the same logits); a GPU keeps the batch."""
    batched = InferenceConfig(mode="slide", crop_size=(8, 8), stride=(4, 4), batched=True)
    assert batched.for_device("cpu") == InferenceConfig(mode="slide", crop_size=(8, 8), stride=(4, 4))
    assert batched.for_device(torch.device("cuda", 0)) is batched
    assert InferenceConfig().for_device("cpu") == InferenceConfig()


def test_pipeline_pictures_predict_one_image_and_one_window_at_a_time(monkeypatch) -> None:
    """Four 1920×1080 images with HRDA's batched windows took more than 20 GB: the pictures must not batch either."""
    import diga.evaluation.report as report

    seen: list[tuple[int, bool]] = []

    def spy(model: nn.Module, x: torch.Tensor, cfg: InferenceConfig, num_classes: int, out_size=None) -> torch.Tensor:
        seen.append((x.shape[0], cfg.batched))
        return predict_logits(model, x, cfg, num_classes, out_size)

    monkeypatch.setattr(report, "predict_logits", spy)
    m, x = PixelModel(), torch.rand(3, 3, 16, 20)
    m.num_classes = 3
    cfg = InferenceConfig(mode="slide", crop_size=(8, 8), stride=(4, 4), batched=True)
    preds = report.predict_each({"a": m}, x, cfg, torch.device("cpu"))
    assert seen == [(1, False)] * 3
    torch.testing.assert_close(preds["a"], m(x).logits.argmax(1))


def test_out_size_and_flip() -> None:
    m, x = PixelModel(), torch.rand(1, 3, 16, 20)
    out = predict_logits(m, x, InferenceConfig(flip=True, fusion="mean"), 3, out_size=(32, 40))
    assert out.shape == (1, 3, 32, 40)


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="slide inference needs"):
        InferenceConfig(mode="slide")
    with pytest.raises(ValueError, match="fusion"):
        InferenceConfig(fusion="vote")


def test_report_pictures_run_each_model_in_turn_with_the_runs_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """`predictions.png` runs every stage's model on the run's device (one at a time) with the configured
    inference, not on the CPU at full resolution."""
    from diga.evaluation import report

    models = {"a": PixelModel(), "b": PixelModel(5)}
    models["a"].num_classes, models["b"].num_classes = 3, 5
    moves: list[str] = []
    for name, m in models.items():
        real = m.to
        monkeypatch.setattr(m, "to", lambda d, real=real, name=name: (moves.append(f"{name}→{d}"), real("cpu"))[1])
    x = torch.rand(2, 3, 16, 20)
    slide = InferenceConfig(mode="slide", crop_size=(8, 8), stride=(4, 4))
    preds = report.predict_each(models, x, slide, torch.device("cpu"))
    assert moves == ["a→cpu", "a→cpu", "b→cpu", "b→cpu"]  # to the device, then back, one model after the other
    for name, m in models.items():
        assert torch.equal(preds[name], predict_logits(m, x, slide, m.num_classes).argmax(1))


def test_work_outside_the_trainer_runs_on_the_runs_device() -> None:
    from omegaconf import OmegaConf

    from diga.tasks.pipeline_report import run_device

    assert run_device(OmegaConf.create({"trainer": {"accelerator": "cpu"}})) == torch.device("cpu")
    gpu = OmegaConf.create({"trainer": {"accelerator": "gpu"}})
    assert run_device(gpu) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
