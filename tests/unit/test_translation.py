"""Translators and translator losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diga.models.weights import WeightFileError
from diga.translation import ColorStatsTranslator, FourierTranslator, LearnedTranslator, build_translator
from diga.translation.losses import VGGPerceptual, label_edges, lsgan_d_loss, lsgan_g_loss, seg_edge_loss
from diga.translation.networks import ImgDecoder, ImgEncoder, MultiScaleDiscriminator


def test_network_shapes() -> None:
    enc, dec = ImgEncoder(8, 1), ImgDecoder(8, 1)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    f = enc(x)
    assert f.shape == (2, 32, 8, 12)
    y = dec(f)
    assert y.shape == x.shape and y.abs().max() <= 1
    maps = MultiScaleDiscriminator(8, num_scales=3)(torch.rand(1, 3, 64, 96))
    assert [tuple(m.shape[-2:]) for m in maps] == [(4, 6), (2, 3), (1, 1)]


def test_lsgan_losses() -> None:
    real, fake = (
        [torch.ones(1, 1, 2, 2), torch.full((1, 1, 1, 1), 0.5)],
        [torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 1, 1)],
    )
    assert lsgan_d_loss(real, fake).item() == pytest.approx(0 + 0 + 0.25 + 1)
    assert lsgan_g_loss(fake).item() == pytest.approx(1 + 0)


def test_label_edges_band() -> None:
    y = torch.zeros(1, 8, 12, dtype=torch.long)
    y[:, :, 6:] = 1
    e = label_edges(y)[0]
    # id step of 1: columns within 2 px of the boundary see ≥5 of 25 neighbours differ (≥ 5/48 > 0.1)
    assert e.any(0).nonzero().flatten().tolist() == [4, 5, 6, 7]
    assert e[:, 4:8].all()
    y[:, :, 6:] = 255  # transitions to void are edges too
    assert label_edges(y)[0, :, 5].all()


def test_seg_edge_loss_mean_over_all_pixels() -> None:
    y = torch.zeros(1, 4, 8, dtype=torch.long)
    y[:, :, 4:] = 1
    src, out = torch.zeros(1, 3, 4, 8), torch.ones(1, 3, 4, 8)
    n_edge = label_edges(y).sum().item()
    assert seg_edge_loss(out, src, y).item() == pytest.approx(n_edge / 32)


def test_fourier_translator_takes_target_mean() -> None:
    x, t = torch.rand(2, 3, 16, 16) * 0.5, torch.rand(1, 3, 16, 16) * 0.5 + 0.5
    out = FourierTranslator(beta=0.01).translate(x, t)
    torch.testing.assert_close(out.mean((-2, -1)), t.mean((-2, -1)).expand(2, 3), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="target images"):
        FourierTranslator().translate(x, None)


def test_color_stats_translator_matches_moments() -> None:
    x, t = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16) * 0.2 + 0.4
    out = ColorStatsTranslator().translate(x, t)
    torch.testing.assert_close(out.mean((-2, -1)), t.mean((-2, -1)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.std((-2, -1)), t.std((-2, -1)), atol=1e-5, rtol=1e-4)


def test_learned_translator_roundtrip_and_errors(tmp_path: Path) -> None:
    enc, dec = ImgEncoder(8, 1), ImgDecoder(8, 1)
    path = tmp_path / "translator.pt"
    torch.save({"arch": {"width": 8, "n_res": 1}, "enc_s": enc.state_dict(), "dec_s2t": dec.state_dict()}, path)
    tr = build_translator("learned", str(path))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(tr(x), ((dec(enc(x * 2 - 1)) + 1) / 2).clamp(0, 1))
    assert not any(p.requires_grad for p in tr.parameters())
    with pytest.raises(WeightFileError, match="not found"):
        LearnedTranslator(tmp_path / "absent.pt")
    torch.save({"x": 1}, tmp_path / "bad.pt")
    with pytest.raises(WeightFileError, match="not a translator file"):
        LearnedTranslator(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"needs translator\.checkpoint"):
        build_translator("learned", None)


def test_perceptual_loss_requires_local_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightFileError, match="VGG-19 ImageNet weights"):
        VGGPerceptual(tmp_path / "vgg19-dcbb9e9d.pth")
    from torchvision.models import vgg19

    path = tmp_path / "vgg19.pth"
    torch.save(vgg19(weights=None).state_dict(), path)
    loss = VGGPerceptual(path)
    x = torch.rand(1, 3, 32, 32)
    assert loss(x, x).item() == 0.0 and loss(x, x.flip(-1)).item() > 0


def test_generator_loss_is_the_weighted_sum_of_its_parts() -> None:
    import torch.nn.functional as F

    from diga.translation.losses import generator_losses, lsgan_g_loss, seg_edge_loss
    from diga.translation.networks import MultiScaleDiscriminator

    torch.manual_seed(0)
    s, t = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    y = torch.randint(0, 3, (1, 32, 32))
    out = {k: torch.rand(1, 3, 32, 32) * 2 - 1 for k in ("s2t", "t2s", "s_rec", "t_rec", "s_cyc", "t_cyc")}
    d1, d2 = MultiScaleDiscriminator(8, num_scales=1), MultiScaleDiscriminator(8, num_scales=1)
    w = {"w_adv": 0.5, "w_cyc": 10.0, "w_edge": 20.0, "w_percep": 0.0, "w_self": 0.001}
    got = generator_losses(out, s, t, y, d1, d2, None, w)
    adv = lsgan_g_loss(d1(out["s2t"])) + lsgan_g_loss(d2(out["t2s"]))
    cyc = F.l1_loss(out["s_cyc"], s) + F.l1_loss(out["t_cyc"], t)
    rec = F.l1_loss(out["s_rec"], s) + F.l1_loss(out["t_rec"], t)
    expected = 0.5 * adv + 10 * cyc + 20 * seg_edge_loss(out["s2t"], s, y) + 0.001 * rec
    torch.testing.assert_close(got["loss_g"], expected)
    assert float(got["loss_percep"]) == 0.0
