"""The EMA teacher component: momentum ramps, parameter-only vs buffer averaging, mode, and its config knobs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diga.models.ema import EMATeacher


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout2d(0.5))


def test_reciprocal_ramp_is_the_cumulative_mean_then_the_decay() -> None:
    ema = EMATeacher(_net(), decay=0.999)
    assert [ema.momentum(i) for i in (0, 1, 3)] == [0.0, 0.5, 0.75]
    assert ema.momentum(999) == pytest.approx(0.999) and ema.momentum(10**6) == pytest.approx(0.999)
    assert EMATeacher(_net(), decay=0.9, ramp="none").momentum(0) == 0.9


def test_power_ramp_is_timm_model_ema_v3_warmup() -> None:
    ema = EMATeacher(_net(), decay=0.9999, ramp="power", warmup_gamma=1.0, warmup_power=0.75)
    for step in (1, 10, 1000):
        assert ema.momentum(step) == pytest.approx(min(1 - (1 + step) ** -0.75, 0.9999))


def test_update_averages_parameters_and_optionally_buffers() -> None:
    student = _net()
    ema = EMATeacher(student, decay=0.5, ramp="none")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(2.0)
        student[1].running_mean.fill_(4.0)
    before = [p.clone() for p in ema.module.parameters()]
    assert ema.update(student, step=7) == 0.5
    for b, t, s in zip(before, ema.module.parameters(), student.parameters()):
        torch.testing.assert_close(t, 0.5 * b + 0.5 * s)
    assert ema.module[1].running_mean.tolist() == [0.0] * 4  # parameters only (the authors)
    ema_b = EMATeacher(student, decay=0.5, ramp="none", buffers=True)
    student[1].running_mean.fill_(8.0)
    ema_b.update(student, 0)
    assert ema_b.module[1].running_mean.tolist() == [6.0] * 4


def test_teacher_is_frozen_and_keeps_its_mode() -> None:
    student = _net()
    train_t, eval_t = EMATeacher(student, mode="train"), EMATeacher(student, mode="eval")
    assert not any(p.requires_grad for p in train_t.parameters())
    for ema in (train_t, eval_t):
        ema.train()  # what Lightning does to every submodule when training starts
    assert train_t.module.training and not eval_t.module.training
    with pytest.raises(ValueError, match="ramp"):
        EMATeacher(student, ramp="cosine")
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    assert not train_t(x).requires_grad  # no graph through the teacher


def test_decay_and_ramp_are_set_from_the_stage_config(tmp_path) -> None:
    from diga.tasks.fit import build_module
    from tests.helpers import compose_cfg

    cfg = compose_cfg(
        [
            "experiment=toy",
            "stage=warmup",
            f"paths.output_dir={tmp_path}",
            "stage.module.ema.decay=0.99",
            "stage.module.ema.ramp=none",
            "stage.module.ema.mode=eval",
            "stage.module.ema.buffers=true",
        ]
    )
    module = build_module(cfg)
    t = module.teacher
    assert (t.decay, t.ramp, t.mode, t.average_buffers) == (0.99, "none", "eval", True)
    assert t.momentum(0) == 0.99
