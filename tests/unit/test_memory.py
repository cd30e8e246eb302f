"""The pre-flight memory estimate: saved-activation accounting on hand-sized graphs, and scaling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from diga.utils.memory import MemoryEstimate, probe_size, saved_activation_bytes, scaled_activation_bytes
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


def test_the_warning_allows_for_measured_peaks_above_the_estimate(monkeypatch, capsys) -> None:
    """Likely peak = 1.3 × estimate + 2 GiB (fitted to the rehearsals): 10 GiB estimated → 15 GiB, so 14 GiB free
    warns and 16 GiB free does not."""
    from omegaconf import OmegaConf

    import diga.tasks.fit as fit
    import diga.utils.memory as memory

    gib = 1024**3
    assert MemoryEstimate(2 * gib, 8 * gib).likely_peak == 15 * gib
    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu", "devices": 1}})
    module = nn.Linear(1, 1)
    module.estimate_memory = lambda *a: None  # type: ignore[attr-defined]  # only its presence is checked
    monkeypatch.setattr(fit, "estimate_stage_memory", lambda cfg, module: MemoryEstimate(2 * gib, 8 * gib))
    for free, warned in ((14 * gib, True), (16 * gib, False)):
        monkeypatch.setattr(memory, "available_bytes", lambda free=free: free)
        assert fit.warn_if_memory_short(cfg, module) == 10 * gib
        out = capsys.readouterr().out
        assert ("will probably be killed for memory" in out) is warned
        assert not warned or "a likely resident peak of 15.0 GB" in out


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
    assert estimate_stage_memory(cfg, module).activations > 0
    after = module.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not changed, f"the estimate changed {changed[:5]}"
    assert not any(m.training for m in module.modules())
    assert torch.equal(torch.get_rng_state(), rng)
