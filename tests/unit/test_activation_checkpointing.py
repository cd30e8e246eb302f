"""Activation checkpointing (memory option): same outputs, gradients and BatchNorm running statistics."""

from __future__ import annotations

import copy

import torch
from torch import nn

from diga.models.backbones import ResNetBackbone
from diga.translation.networks import ImgDecoder, ImgEncoder


def _forward_backward(net: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    out = net(x)
    out = out if isinstance(out, list) else [out]
    sum(o.square().mean() for o in out).backward()
    return [o.detach() for o in out], [p.grad.clone() for p in net.parameters() if p.grad is not None]


def test_resnet_checkpointing_keeps_outputs_gradients_and_bn_statistics() -> None:
    torch.manual_seed(0)
    plain = ResNetBackbone("resnet18", freeze_bn_affine=False).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    x = torch.rand(2, 3, 64, 64)
    out_a, grad_a = _forward_backward(plain, x)
    out_b, grad_b = _forward_backward(ckpt, x)
    for a, b in zip(out_a + grad_a, out_b + grad_b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for (name, a), b in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(a, b), f"{name}: BN statistics updated twice by the recomputation"


def test_translator_checkpointing_keeps_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    enc, dec = ImgEncoder(8, 2), ImgDecoder(8, 2)
    net = nn.Sequential(enc, dec)
    ckpt = copy.deepcopy(net)
    ckpt[0].set_grad_checkpointing(True)
    ckpt[1].set_grad_checkpointing(True)
    x = torch.rand(1, 3, 32, 32)
    (out_a, grad_a), (out_b, grad_b) = _forward_backward(net, x), _forward_backward(ckpt, x)
    for a, b in zip(out_a + grad_a, out_b + grad_b, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
