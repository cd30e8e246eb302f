"""Hugging Face SegFormer/MiT weights in and out: random-init `transformers` models, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from diga.data.labels import get_label_set  # noqa: E402
from diga.models import build_segmentor  # noqa: E402
from diga.models.hf_segformer import MIT_SIZES  # noqa: E402
from diga.models.segmentor import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from diga.models.weights import WeightFileError  # noqa: E402


def _hf_model(variant: str, num_labels: int = 19, seed: int = 0) -> torch.nn.Module:
    """A random SegformerForSemanticSegmentation with every tensor perturbed, so a swapped key/value, a wrong
    norm or head mapping changes the logits visibly."""
    torch.manual_seed(seed)
    cfg = transformers.SegformerConfig(num_labels=num_labels, **MIT_SIZES[variant],
                                       decoder_hidden_size=256 if variant in ("mit_b0", "mit_b1") else 768)  # fmt: skip
    model = transformers.SegformerForSemanticSegmentation(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        bn = model.decode_head.batch_norm
        bn.running_mean.normal_(0, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def _hf_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.to(x.dtype)(pixel_values=((x - mean) / std).to(x.dtype)).logits


def _max_rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |Δ| relative to the logits' scale: float32 leaves ~1e-6 of summation-order noise between timm's and
    transformers' attention (about 1e-5 absolute at logits of 5), which says nothing about the mapping. (float64
    would remove it, but transformers' depthwise conv on a strided view runs ~50× slower there.)"""
    return float((got - want).abs().max() / want.abs().max().clamp(min=1.0))


def _ours(variant: str, pretrained: object, num_classes: int = 19, eps: float = 1e-5) -> torch.nn.Module:
    return build_segmentor(backbone={"name": variant, "layer_norm_eps": eps}, head="segformer",
                           num_classes=num_classes, pretrained=str(pretrained)).eval()  # fmt: skip


@pytest.mark.parametrize("variant", ["mit_b0", "mit_b2"])
def test_segformer_folder_and_safetensors_give_transformers_logits(variant: str, tmp_path: Path) -> None:
    hf = _hf_model(variant)
    hf.save_pretrained(tmp_path / "hf")
    x = torch.rand(2, 3, 96, 160)
    want = _hf_logits(hf, x)
    for source in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):
        with torch.no_grad():
            got = _ours(variant, source)(x).logits
        assert _max_rel_diff(got, want) < 1e-5, (source, (got - want).abs().max())
    with torch.no_grad():  # diga's default (NVlabs) eps: close, not equal
        default = _ours(variant, tmp_path / "hf", eps=1e-6)(x).logits
    assert _max_rel_diff(default, want) < 1e-3


def test_mit_classification_checkpoint_loads_the_encoder_only(tmp_path: Path) -> None:
    """`nvidia/mit-b*` are SegformerForImageClassification files: the encoder is filled, the head stays new."""
    torch.manual_seed(1)
    cfg = transformers.SegformerConfig(num_labels=1000, **MIT_SIZES["mit_b0"])
    cls = transformers.SegformerForImageClassification(cfg).eval()
    cls.save_pretrained(tmp_path / "mit")
    model = _ours("mit_b0", tmp_path / "mit")
    x = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = cls.segformer(pixel_values=(x - mean) / std, output_hidden_states=True).hidden_states
        got = model.backbone(model.normalize(x))
    for a, b in zip(got, want, strict=True):
        assert _max_rel_diff(a, b) < 1e-5


def test_another_mit_size_or_class_count_is_handled_not_silently_dropped(tmp_path: Path) -> None:
    _hf_model("mit_b2").save_pretrained(tmp_path / "b2")
    with pytest.raises(WeightFileError, match="no place in mit_b1"):
        _ours("mit_b1", tmp_path / "b2")  # same widths as b2, fewer blocks: the extra blocks must not vanish
    ade = _hf_model("mit_b0", num_labels=150)
    ade.save_pretrained(tmp_path / "ade")
    model = _ours("mit_b0", tmp_path / "ade", num_classes=19)  # encoder loaded, 19-class head left initialised
    sd = ade.state_dict()
    ours = model.backbone.body.state_dict()
    assert torch.equal(ours["patch_embed.proj.weight"], sd["segformer.stages.0.patch_embeddings.proj.weight"])


def test_hub_id_resolves_from_the_local_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--nvidia--segformer-b0-finetuned-cityscapes-1024-1024"
    _hf_model("mit_b0").save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    x = torch.rand(1, 3, 64, 96)
    want = _hf_logits(_hf_model("mit_b0"), x)
    with torch.no_grad():
        got = _ours("mit_b0", "nvidia/segformer-b0-finetuned-cityscapes-1024-1024")(x).logits
    assert _max_rel_diff(got, want) < 1e-5
    with pytest.raises(WeightFileError, match="not in the local Hugging Face cache"):
        _ours("mit_b0", "nvidia/mit-b5")


def test_export_format_hf_is_loaded_by_transformers_with_equal_logits(tmp_path: Path) -> None:
    from diga.export import export_hf
    from diga.models.loading import load_segmentor

    torch.manual_seed(2)
    model = build_segmentor(backbone="mit_b0", head="segformer", num_classes=19).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    spec = {"_target_": "diga.models.build_segmentor", "backbone": "mit_b0", "head": "segformer", "num_classes": 19}
    ckpt = tmp_path / "final_model.pt"
    torch.save({"model_cfg": spec, "label_set": "cityscapes19", "state_dict": model.state_dict()}, ckpt)
    diff = export_hf(ckpt, tmp_path / "exported", height=96, width=128)
    assert diff < 1e-4  # diga's 1e-6 LayerNorm eps vs transformers' 1e-5, nothing else
    hf = transformers.SegformerForSemanticSegmentation.from_pretrained(tmp_path / "exported").eval()
    assert tuple(hf.config.id2label[i] for i in range(19)) == get_label_set("cityscapes19").classes
    x = torch.rand(1, 3, 64, 96)
    loaded, _ = load_segmentor(ckpt)
    for m in loaded.modules():  # the same weights with transformers' eps: equal
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-5
    with torch.no_grad():
        assert _max_rel_diff(loaded(x).logits, _hf_logits(hf, x)) < 1e-5
    with pytest.raises(FileExistsError):
        export_hf(ckpt, tmp_path / "exported")
