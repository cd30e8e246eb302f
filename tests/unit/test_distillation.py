"""Symmetric distillation, EMA schedule and photometric view against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diga.augment import PhotometricAugment
from diga.losses import soft_cross_entropy, symmetric_distillation
from diga.models.ema import ema_momentum, ema_update, make_teacher


def _logits(p: list[float]) -> torch.Tensor:
    return torch.tensor(p).log().view(1, len(p), 1, 1)


def test_soft_cross_entropy_hand_computed() -> None:
    q = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    z = _logits([0.5, 0.5])
    assert soft_cross_entropy(z, q).item() == pytest.approx(math.log(2), rel=1e-6)


def test_symmetric_distillation_hand_computed() -> None:
    s_o, s_m = _logits([0.8, 0.2]), _logits([0.5, 0.5])
    t_o, t_m = _logits([0.6, 0.4]), _logits([0.1, 0.9])
    # teacher(orig) → student(mixed): −(0.6 log .5 + 0.4 log .5) = log 2
    forward = math.log(2)
    # teacher(mixed) → student(orig): −(0.1 log .8 + 0.9 log .2)
    backward = -(0.1 * math.log(0.8) + 0.9 * math.log(0.2))
    got = symmetric_distillation(s_o, s_m, t_o, t_m, reverse_weight=0.5)
    assert got.item() == pytest.approx(forward + 0.5 * backward, rel=1e-5)


def test_distillation_masks_void_and_detaches_teacher() -> None:
    s = torch.randn(1, 3, 1, 2, requires_grad=True)
    t = torch.randn(1, 3, 1, 2, requires_grad=True)
    labels = torch.tensor([[[0, 255]]])
    masked = symmetric_distillation(s, s, t, t, 1.0, labels=labels)
    only_first = symmetric_distillation(s[..., :1], s[..., :1], t[..., :1], t[..., :1], 1.0)
    assert masked.item() == pytest.approx(only_first.item(), rel=1e-6)
    masked.backward()
    assert t.grad is None and s.grad is not None


def test_ema_momentum_schedule() -> None:
    assert ema_momentum(0) == 0.0
    assert ema_momentum(1) == pytest.approx(0.5)
    assert ema_momentum(9) == pytest.approx(0.9)
    assert ema_momentum(999) == pytest.approx(0.999)
    assert ema_momentum(10**6) == pytest.approx(0.999)


def test_ema_is_cumulative_mean_early_on() -> None:
    student = nn.Linear(2, 1, bias=False)
    teacher = make_teacher(student)
    snapshots = []
    for step, value in enumerate([1.0, 3.0, 8.0]):
        with torch.no_grad():
            student.weight.fill_(value)
        snapshots.append(value)
        ema_update(teacher, student, ema_momentum(step))
        assert teacher.weight[0, 0].item() == pytest.approx(sum(snapshots) / len(snapshots))
    assert not teacher.weight.requires_grad


def test_ema_buffers_optional() -> None:
    student, bn = nn.BatchNorm1d(2), None
    teacher = make_teacher(student)
    student.running_mean.fill_(4.0)
    ema_update(teacher, student, 0.5)
    assert teacher.running_mean.tolist() == [0.0, 0.0]
    ema_update(teacher, student, 0.5, buffers=True)
    assert teacher.running_mean.tolist() == [2.0, 2.0]
    del bn


def test_photometric_beta_blend() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(PhotometricAugment(beta=0.0)(x), x)
    none_fire = PhotometricAugment(beta=0.4, jitter_p=0, grayscale_p=0, blur_p=0, sharpness_p=0)
    torch.testing.assert_close(none_fire(x), x)  # clean space: nothing fires → identity
    ref = PhotometricAugment(beta=0.4, jitter_p=0, grayscale_p=0, blur_p=0, sharpness_p=0, space="reference")
    # REF: even with no op firing, A(x) = 1.4·x − 0.4 in the normalised BGR space
    mean = torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(1, 3, 1, 1)
    to_ref = lambda im: (im.flip(1) * 255 - mean) / 128  # noqa: E731
    torch.testing.assert_close(to_ref(ref(x)), 1.4 * to_ref(x) - 0.4, atol=1e-4, rtol=1e-4)
    blurred = PhotometricAugment(beta=1.0, jitter_p=0, grayscale_p=0, blur_p=1.0, sharpness_p=0)(x)
    assert not torch.allclose(blurred, x)
