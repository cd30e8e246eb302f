"""The pre-flight memory estimate: saved-activation accounting on hand-sized graphs, and scaling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from diga.utils.memory import (
    MemoryEstimate,
    peak_live_bytes,
    probe_size,
    saved_activation_bytes,
    scaled_activation_bytes,
)
from tests.helpers import TRAINING_STAGES


def test_saved_bytes_of_a_linear_layer_is_its_input() -> None:
    lin = nn.Linear(100, 10, bias=False)
    x = torch.rand(8, 100, requires_grad=False)
    # backward of y = x Wᵀ w.r.t. W needs x: 8×100 float32 = 3200 bytes; W itself is excluded
    assert saved_activation_bytes(lambda: lin(x), exclude=lin.parameters()) == 8 * 100 * 4


def test_shared_storage_is_counted_once() -> None:
    x = torch.rand(1000, requires_grad=True)
    assert saved_activation_bytes(lambda: (x * x).sum()) == 1000 * 4  # x saved twice, one storage


def test_activation_estimate_scales_with_pixels_and_images() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    one = scaled_activation_bytes(net, (256, 256), 1, None, forward=lambda x: net(x))
    four = scaled_activation_bytes(net, (512, 512), 1, None, forward=lambda x: net(x))
    assert four == 4 * one
    assert scaled_activation_bytes(net, (256, 256), 3, None, forward=lambda x: net(x)) == 3 * one
    # conv1 input (3 ch) + relu output (8 ch, saved by ReLU and conv2) per pixel at the probe, float32
    h, w = probe_size((256, 256))
    assert one == (3 + 8) * 4 * h * w * (256 * 256) // (h * w)


def test_probe_never_below_the_smallest_side() -> None:
    assert probe_size((512, 896)) == (256, 448)
    assert probe_size((64, 112)) == (64, 112)


def test_estimate_line_names_both_parts() -> None:
    line = MemoryEstimate(2 * 1024**3, 30 * 1024**3).line(22 * 1024**3)
    assert "about 32.0 GB" in line and "30.0 GB activations" in line and "22.0 GB are available" in line


def test_a_stage_that_does_not_fit_and_has_no_memory_option_stops_before_work(monkeypatch) -> None:
    """Likely peak = 1.3 × estimate + 2 GiB (fitted to the rehearsals): 10 GiB estimated → 15 GiB, so 16 GiB free
    starts and 14 GiB free stops (exit 2) instead of running into an out-of-memory kill."""
    from omegaconf import OmegaConf

    import diga.tasks.fit as fit
    import diga.utils.memory as memory
    from diga.tasks.memory_fit import MemoryShortError

    gib = 1024**3
    assert MemoryEstimate(2 * gib, 8 * gib).likely_peak == 15 * gib
    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu", "devices": 1}, "stage": {"name": "x"},
                            "datamodule": {"source": {}, "use_target": False}})  # fmt: skip
    module = nn.Linear(1, 1)
    module.estimate_memory = lambda *a: None  # type: ignore[attr-defined]  # replaced by the patch below
    module.memory_fallbacks = lambda *a: []  # type: ignore[attr-defined]  # the stage contract: no memory option
    monkeypatch.setattr(fit, "estimate_stage_memory",
                        lambda cfg, module, image=None, known=None: MemoryEstimate(2 * gib, 8 * gib))  # fmt: skip
    monkeypatch.setattr(fit, "stage_batch", lambda cfg: (2, 0))
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * gib)
    assert fit.fit_in_memory(cfg, module) == (module, 10 * gib, ())
    monkeypatch.setattr(memory, "available_bytes", lambda: 14 * gib)
    with pytest.raises(MemoryShortError, match=r"(?s)likely resident peak of 15\.0 GB.*memory_estimate=false"):
        fit.fit_in_memory(cfg, module)


def test_the_first_memory_option_that_fits_is_chosen_and_the_rest_are_not_estimated() -> None:
    from diga.tasks.memory_fit import first_that_fits

    gib = 1024**3
    peaks = {(): 30, ("a=1",): 20, ("a=1", "b=2"): 9, ("a=1", "b=4"): 5}
    asked = []

    def estimate_with(overrides: tuple[str, ...]) -> MemoryEstimate:
        asked.append(overrides)
        return MemoryEstimate(0, int((peaks[overrides] * gib - 2 * gib) / 1.3))

    choice, tried = first_that_fits([("a=1",), ("a=1", "b=2"), ("a=1", "b=4")], estimate_with, free=10 * gib)
    assert choice is not None and choice.overrides == ("a=1", "b=2")
    assert asked == [("a=1",), ("a=1", "b=2")] and len(tried) == 2
    assert first_that_fits([("a=1",)], estimate_with, free=10 * gib)[0] is None


def test_overrides_are_given_in_the_form_that_works_where_the_stage_runs() -> None:
    from diga.tasks.memory_fit import as_given_here

    both = ["model.grad_checkpointing=true", "stage.module.micro_batches=2"]
    assert as_given_here(both, None) == "model.grad_checkpointing=true stage.module.micro_batches=2"
    assert as_given_here(both, "warmup") == (
        "model.grad_checkpointing=true '++stage.step_overrides={warmup:[\"stage.module.micro_batches=2\"]}'"
    )


def test_micro_batch_options_divide_every_domains_batch(tmp_path: Path, toy_root: Path) -> None:
    from diga.tasks.fit import build_module
    from tests.helpers import compose_cfg, tiny_toy_overrides

    module = build_module(compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only"]))
    ckpt = "model.grad_checkpointing=true"
    assert module.memory_fallbacks(8, 12) == [(ckpt,), *((ckpt, f"stage.module.micro_batches={n}") for n in (2, 4))]
    assert module.memory_fallbacks(3, 0) == [(ckpt,), (ckpt, "stage.module.micro_batches=3")]


@pytest.mark.parametrize("stage", TRAINING_STAGES)
def test_the_estimate_leaves_no_trace_on_the_module(stage: str, tmp_path: Path, toy_root: Path,
                                                   selftrain_inputs: tuple[Path, Path]) -> None:  # fmt: skip
    """The probe forward runs the real network in train mode; a CPU run (which estimates) and a GPU run (which does
    not) must still start from the same BatchNorm statistics, modes and random numbers."""
    from diga.tasks.fit import build_module, estimate_stage_memory
    from tests.helpers import compose_cfg, tiny_toy_overrides, training_stage_overrides

    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), *training_stage_overrides(stage,
                       selftrain_inputs)])  # fmt: skip
    module = build_module(cfg).eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    estimate = estimate_stage_memory(cfg, module, (64, 128))
    assert estimate.activations > 0 and (estimate.inference > 0) == module.validates
    after = module.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not changed, f"the estimate changed {changed[:5]}"
    assert not any(m.training for m in module.modules())
    assert torch.equal(torch.get_rng_state(), rng)


def test_peak_live_bytes_counts_what_is_alive_at_once() -> None:
    """conv(3→8) → ReLU → conv(8→4) on 32×32 without gradients: the peak is the first conv's output and the ReLU's
    (8 + 8 channels × 4 KiB), not the sum of every output; in place the ReLU adds nothing, then 8 + 4 channels."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    plane = 32 * 32 * 4
    for inplace, expected in ((False, 16 * plane), (True, 12 * plane)):
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=inplace), nn.Conv2d(8, 4, 3, padding=1))
        with torch.no_grad():
            assert peak_live_bytes(lambda net=net: net(x)) == expected


def test_the_inference_probe_shrinks_only_what_keeps_the_windows() -> None:
    from diga.evaluation.inference import InferenceConfig, probe_factor

    slide = InferenceConfig(mode="slide", crop_size=(1024, 1024), stride=(512, 512), batched=True)
    assert probe_factor((1024, 2048), slide) == 4 and slide.shrunk(4).crop_size == (256, 256)
    assert probe_factor((1024, 2048), InferenceConfig(scales=(1.0, 0.5))) == 4  # 512 at the smallest scale → 128
    assert probe_factor((512, 1024), InferenceConfig(scales=(1.0, 0.5))) == 2
    assert probe_factor((80, 160), InferenceConfig()) == 1  # the toy: probed as it is
    assert probe_factor((128, 256), slide) == 1  # windows larger than the image are clipped to it
    odd = InferenceConfig(mode="slide", crop_size=(510, 510), stride=(255, 255))
    assert probe_factor((1024, 2048), odd) == 3 and odd.divides(3) and not odd.divides(2) and not odd.divides(6)
    assert probe_factor((1024, 2048), InferenceConfig(mode="slide", crop_size=(511, 511), stride=(257, 257))) == 1


@pytest.mark.parametrize("hrda", [False, True], ids=["one_resolution", "hrda"])
def test_the_inference_estimate_from_a_small_probe_matches_the_full_size_measurement(hrda: bool) -> None:
    """The probes at 1/2 and 1/4 of the sides (windows and the detail window with them), extrapolated, against the
    same measurement on the full image: within 15 %; and one window at a time needs less than all in one batch."""
    from types import SimpleNamespace

    from diga.evaluation.inference import InferenceConfig, predict_logits
    from diga.models import build_segmentor
    from diga.modules.base import SegmentationModule

    torch.manual_seed(0)
    options = {"hrda": {"hr_crop_size": [128, 128], "attention": {"embed_dim": 16}}} if hrda else {}
    model = build_segmentor({"name": "mit_b0"}, {"name": "daformer", "embed_dim": 32}, num_classes=4, **options)
    batched = InferenceConfig(mode="slide", crop_size=(256, 256), stride=(128, 128), batched=True)
    holder = SimpleNamespace(model=model, inference=batched)
    estimate = SegmentationModule.estimate_inference_memory(holder, (256, 512), 1)  # type: ignore[arg-type]
    x = torch.rand(1, 3, 256, 512)
    measured = peak_live_bytes(lambda: predict_logits(model.eval(), x, batched, 4)) + x.numel() * 4
    assert estimate == pytest.approx(measured, rel=0.15)
    holder.inference = InferenceConfig(mode="slide", crop_size=(256, 256), stride=(128, 128), batched=False)
    assert SegmentationModule.estimate_inference_memory(holder, (256, 512), 1) < 0.75 * estimate  # type: ignore


def test_batched_windows_are_unbatched_on_the_cpu_and_on_a_gpu_where_they_do_not_fit(
        tmp_path: Path, toy_root: Path, monkeypatch) -> None:  # fmt: skip
    """CPU: a stage with batched sliding-window validation validates one window at a time, whatever memory is free
    (no faster batched there) — memory options are training options only; GPU: the pre-flight rebuilds the stage
    without batched windows when the weights and the batched windows exceed free memory."""
    from omegaconf import OmegaConf

    import diga.tasks.fit as fit
    import diga.tasks.memory_fit as mf
    import diga.utils.memory as memory
    from diga.tasks.fit import build_module
    from tests.helpers import compose_cfg, tiny_toy_overrides

    slide = [
        "inference.mode=slide",
        "inference.crop_size=[64,64]",
        "inference.stride=[32,32]",
        "inference.batched=true",
    ]
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only", *slide])
    module = build_module(cfg)
    assert not any("inference.batched=false" in o for o in module.memory_fallbacks(2, 0))
    monkeypatch.setattr(memory, "available_bytes", lambda: 1024**4)  # batched windows would fit
    fitted = fit.fit_in_memory(cfg, module, (80, 160))
    assert module.inference.batched and not fitted.module.inference.batched
    assert fitted.overrides == ("inference.batched=false",)
    no_check = fit.fit_in_memory(OmegaConf.merge(cfg, {"memory_estimate": False}), module, (80, 160))
    assert not no_check.module.inference.batched and no_check.estimate is None
    images = int(cfg.datamodule.val_batch_size)
    need = (module.weight_bytes() + module.estimate_inference_memory((80, 160), images)) * mf.GPU_MARGIN
    need += mf.GPU_OVERHEAD
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(need) + 2**20, int(need * 4)))
    assert mf.validation_option_on_gpu(cfg, module, (80, 160)) == ()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(need) - 2**20, int(need * 4)))
    assert mf.validation_option_on_gpu(cfg, module, (80, 160)) == ("inference.batched=false",)
    monkeypatch.setattr(fit, "estimate_stage_memory", lambda *a: pytest.fail("a GPU run estimates no training step"))
    gpu_cfg = OmegaConf.merge(cfg, {"trainer": {"accelerator": "gpu"}})
    unbatched, _, chosen = fit.fit_in_memory(gpu_cfg, module, (80, 160))
    assert module.inference.batched and not unbatched.inference.batched and chosen == ("inference.batched=false",)


def test_a_validation_batch_of_one_comes_last_and_validation_is_estimated_once_per_inference(
        tmp_path: Path, toy_root: Path, monkeypatch) -> None:  # fmt: skip
    """When validation sets the peak, training options cannot lower it: after them come a validation batch of one
    image (the same predictions), alone and with each option. Options that leave validation as it is reuse its
    estimate: one measurement per validation batch, however many options are tried. (On the CPU the batched windows
    are unbatched before any estimate.)"""
    import diga.tasks.fit as fit
    import diga.utils.memory as memory
    from diga.modules.base import SegmentationModule
    from tests.helpers import compose_cfg, tiny_toy_overrides

    gib = 1024**3
    slide = ["inference.mode=slide", "inference.crop_size=[64,64]", "inference.stride=[32,32]"]
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only", *slide,
                       "inference.batched=true", "datamodule.val_batch_size=2"])  # fmt: skip
    calls = []

    def inference(self, image, images, precision=None) -> int:
        calls.append((self.inference.batched, images))
        return (100 if self.inference.batched else 50) * images * gib

    monkeypatch.setattr(SegmentationModule, "estimate_inference_memory", inference)
    monkeypatch.setattr(SegmentationModule, "estimate_memory", lambda self, *a: MemoryEstimate(0, gib))
    monkeypatch.setattr(memory, "available_bytes", lambda: 80 * gib)  # 50 GB validation fits, 100 does not
    module = fit.build_module(cfg)
    fitted = fit.fit_in_memory(cfg, module, (80, 160))
    assert fitted.overrides == ("inference.batched=false", "datamodule.val_batch_size=1")
    assert not fitted.module.inference.batched
    assert sorted(calls) == [(False, 1), (False, 2)]
    # the training options were tried before the batch of one, each without a validation estimate of its own
    assert len(module.memory_fallbacks(*fit.stage_batch(cfg))) >= 2


def test_a_datamodule_option_chosen_by_the_pre_flight_reaches_the_datamodule(tmp_path: Path, toy_root: Path,
                                                                               monkeypatch) -> None:  # fmt: skip
    """The datamodule is built before the pre-flight: one of its options (a validation batch of one) builds it again,
    or validation would run with the batch that did not fit."""
    import pytorch_lightning as pl

    import diga.tasks.fit as fit
    from tests.helpers import compose_cfg, tiny_toy_overrides

    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only", "logger=none"])
    assert cfg.datamodule.val_batch_size == 4
    one_image = ("datamodule.val_batch_size=1",)
    monkeypatch.setattr(fit, "fit_in_memory", lambda c, m, *a: fit.FittedStage(m, None, one_image))
    seen = {}

    def stop(self, module, datamodule=None, **kw):
        seen["val_batch_size"] = datamodule.val_batch_size
        raise KeyboardInterrupt

    monkeypatch.setattr(pl.Trainer, "fit", stop)
    with pytest.raises(KeyboardInterrupt):
        fit.run_fit(cfg)
    assert seen == {"val_batch_size": 1}


def test_a_stage_rebuilt_with_a_memory_option_starts_from_the_same_weights(tmp_path: Path, toy_root: Path,
                                                                          monkeypatch) -> None:  # fmt: skip
    """The options change no parameter, so a run that needed one trains the same initial model as a run that did
    not: the rebuild starts from the random state of the first build."""
    import diga.tasks.fit as fit
    import diga.utils.memory as memory
    from tests.helpers import compose_cfg, tiny_toy_overrides

    gib = 1024**3
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), "stage=source_only"])
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    first = fit.build_module(cfg)
    small, too_big = MemoryEstimate(0, 0), MemoryEstimate(0, 100 * gib)
    monkeypatch.setattr(fit, "estimate_stage_memory",
                        lambda c, m, *a: small if c.model.grad_checkpointing else too_big)  # fmt: skip
    monkeypatch.setattr(memory, "available_bytes", lambda: 10 * gib)
    rebuilt, _, _ = fit.fit_in_memory(cfg, first, None, state)
    assert rebuilt is not first and rebuilt.hparams.model["grad_checkpointing"]
    before, after = first.state_dict(), rebuilt.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("hrda", [False, True], ids=["one_resolution", "hrda"])
def test_the_teacher_peak_from_a_half_size_probe_matches_the_full_crop(hrda: bool) -> None:
    """The teacher's no-gradient forward of two 256×256 crops (HRDA: all 9 detail windows of each in one batch),
    estimated from one image at 128×128 with a detail window as much smaller, against the measurement: within 20 %."""
    from types import SimpleNamespace

    from diga.models import build_segmentor
    from diga.modules.base import SegmentationModule

    torch.manual_seed(0)
    options = {"hrda": {"hr_crop_size": [128, 128], "attention": {"embed_dim": 16}}} if hrda else {}
    model = build_segmentor({"name": "mit_b0"}, {"name": "daformer", "embed_dim": 32}, num_classes=4, **options)
    estimate = SegmentationModule.teacher_peak_bytes(SimpleNamespace(model=model), (256, 256), 2)  # type: ignore
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        measured = peak_live_bytes(lambda: model.eval()(x))
    assert estimate == pytest.approx(measured, rel=0.2)


@pytest.mark.parametrize("stage", ["warmup", "selftrain", "daformer"])
def test_the_teachers_peak_adds_to_the_student_graphs_alive_beside_it(
    stage: str, tmp_path: Path, toy_root: Path, selftrain_inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DiGA's warm-up and self-training run the teacher after the student's forward on both views (the authors'
    order): its peak comes on top of those graphs. DAFormer's pseudo-label forward follows the source backward, so a
    step holds the larger of the two — unless the losses are back-propagated together."""
    from diga.modules.base import SegmentationModule
    from diga.tasks.fit import build_module
    from tests.helpers import compose_cfg, tiny_toy_overrides, training_stage_overrides

    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, toy_root.parent), *training_stage_overrides(stage,
                       selftrain_inputs)])  # fmt: skip
    module = build_module(cfg)
    gib = 1024**3
    monkeypatch.setattr(SegmentationModule, "teacher_peak_bytes", lambda self, crop, images, p=None: images * gib)

    def activations(teacher: bool) -> int:
        with monkeypatch.context() as m:
            if not teacher:
                m.setattr(type(module), "teacher_images", lambda self, s, t: 0)
            return module.estimate_memory((64, 64), 2, 2).activations

    student, acts = activations(False), activations(True)
    if stage == "daformer":  # the 2 target crops: after the source backward, else beside the source pass's graph
        assert acts == max(student, 2 * gib)
        module.hparams.sequential_backward = False
        student = activations(False)
        assert module.grad_forwards_per_image == 3  # source, class-mix, MIC
        assert activations(True) == pytest.approx(student / 3 + 2 * gib, abs=2)
    else:  # cat(x, x̃) of 2 source images, beside both views' graphs (all of the warm-up's, 2 of 3 in self-training)
        assert acts == pytest.approx(student * 2 / module.grad_forwards_per_image + 4 * gib, abs=2)
