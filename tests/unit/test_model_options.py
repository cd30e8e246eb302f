"""One spelling for model options: `backbone: {name: …, <encoder options>}`, `head: {name: …, <head options>}`.

The flat spelling of older configs and checkpoints (`embed_dim: 768` beside `backbone: mit_b5`) still builds the
same model, with one deprecation line; the factory reaches the registries through their public functions only.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from diga.models import build_segmentor
from diga.models.factory import DEPRECATED_FLAT_OPTIONS, min_input_side
from diga.models.registry import get_backbone, get_head, is_backbone, is_head, list_backbones, list_heads

REPO = Path(__file__).resolve().parents[2]
MODEL_YAMLS = sorted((REPO / "conf" / "model").glob("*.yaml"))


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("path", MODEL_YAMLS, ids=lambda p: p.stem)
def test_every_model_config_is_nested(path: Path) -> None:
    node = yaml.safe_load(path.read_text())
    flat = sorted(set(node) & set(DEPRECATED_FLAT_OPTIONS))
    assert not flat, f"{path.name}: {flat} belong under backbone: or head:"
    for side, registered in (("backbone", is_backbone), ("head", is_head)):
        if side not in node:
            assert "defaults" in node, f"{path.name}: no {side}"  # a child config (defaults: [parent]) may omit one
            continue
        spec = node[side]
        assert isinstance(spec, dict) and "name" in spec, f"{path.name}: {side} must be {{name: …, <options>}}"
        assert registered(spec["name"]), f"{path.name}: {side} {spec['name']!r} is not registered"


def test_flat_options_build_the_same_model_with_one_deprecation_line() -> None:
    torch.manual_seed(0)
    nested = build_segmentor(backbone={"name": "mit_b0", "drop_path_rate": 0.0},
                             head={"name": "daformer", "embed_dim": 32, "dropout": 0.2}, num_classes=5)  # fmt: skip
    torch.manual_seed(0)
    with pytest.warns(FutureWarning) as record:
        flat = build_segmentor(backbone="mit_b0", head="daformer", num_classes=5, embed_dim=32, dropout=0.2,
                               drop_path_rate=0.0)  # fmt: skip
    messages = [str(w.message) for w in record if issubclass(w.category, FutureWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    for key, side in (("embed_dim", "head"), ("dropout", "head"), ("drop_path_rate", "backbone")):
        assert f"model.{key}" in messages[0] and f"model.{side}.{key}" in messages[0]
    assert type(flat.backbone) is type(nested.backbone) and type(flat.head) is type(nested.head)
    assert _shapes(flat) == _shapes(nested)
    for a, b in zip(flat.state_dict().values(), nested.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert flat.head.dropout.p == nested.head.dropout.p == 0.2


def test_a_single_flat_key_names_old_and_new_spelling() -> None:
    with pytest.warns(FutureWarning, match=r"^model\.embed_dim is deprecated: use model\.head\.embed_dim$"):
        model = build_segmentor(backbone="mit_b0", embed_dim=64, num_classes=3)
    assert model.feat_dim == 64


def test_the_nested_spelling_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        build_segmentor(backbone={"name": "mit_b0"}, head={"name": "segformer", "embed_dim": 32}, num_classes=3)
        build_segmentor(backbone="mit_b0", head="segformer", num_classes=3)  # a bare name: no options


def test_flat_and_nested_spelling_of_one_option_must_agree() -> None:
    with pytest.raises(ValueError, match=r"model\.dropout=0\.3 .* contradicts model\.head\.dropout=0\.1"):
        build_segmentor(backbone="mit_b0", head={"name": "segformer", "dropout": 0.1}, dropout=0.3)
    with pytest.raises(ValueError, match=r"unknown model options \['depth'\]"):
        build_segmentor(backbone="mit_b0", depth=3)


def test_an_option_the_constructor_refuses_names_the_config_key() -> None:
    with pytest.raises(TypeError, match=r"model\.head 'daformer'.*model\.head\.key_channels"):
        build_segmentor(backbone="mit_b0", head={"name": "daformer", "key_channels": 64}, num_classes=3)
    with pytest.raises(ValueError, match="unknown head 'nope'"):
        build_segmentor(backbone="mit_b0", head="nope")


def test_min_input_side_reads_the_nested_backbone_and_the_flat_one() -> None:
    assert min_input_side({"backbone": {"name": "mit_b0", "drop_path_rate": 0.1}}) == 32
    assert min_input_side({"backbone": "mit_b0"}) == 32
    assert min_input_side({"backbone": {"name": "resnet18"}}) == min_input_side({"backbone": "resnet18"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # sizing is quiet: the build says it once
        assert min_input_side({"backbone": "mit_b0", "drop_path_rate": 0.1, "embed_dim": 256}) == 32


def test_public_registry_lookups() -> None:
    assert "mit_b0" in list_backbones() and "daformer" in list_heads()
    assert callable(get_backbone("mit_b0")) and callable(get_head("daformer"))
    assert is_backbone("timm") and not is_backbone("daformer") and is_head("ocr") and not is_head("mit_b0")
    with pytest.raises(ValueError, match=r"unknown backbone 'nope'; registered: .*mit_b0"):
        get_backbone("nope")


def test_the_factory_imports_no_private_registry_names() -> None:
    tree = ast.parse((REPO / "src" / "diga" / "models" / "factory.py").read_text())
    private = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("registry"):
            private |= {a.name for a in node.names if a.name.startswith("_")}
        if isinstance(node, ast.Attribute) and node.attr in ("_BACKBONES", "_HEADS", "_ensure_builtin"):
            private.add(node.attr)
    assert not private, f"diga.models.factory uses private registry names {sorted(private)}"
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    assert not names & {"HEAD_OPTIONS", "BACKBONE_OPTIONS", "_accepted"}


def test_a_checkpoint_written_with_flat_options_still_loads(tmp_path: Path) -> None:
    """final_model.pt files of older diga versions carry the flat model config."""
    from diga.models.loading import load_segmentor

    flat_cfg = {"_target_": "diga.models.build_segmentor", "backbone": "mit_b0", "head": "segformer",
                "num_classes": 7, "embed_dim": 32, "dropout": 0.1, "drop_path_rate": 0.1, "pretrained": None,
                "weights": None}  # fmt: skip
    with pytest.warns(FutureWarning):
        saved = build_segmentor(**{k: v for k, v in flat_cfg.items() if k != "_target_"})
    torch.save({"model_cfg": flat_cfg, "label_set": "toy", "state_dict": saved.state_dict()}, tmp_path / "old.pt")
    with pytest.warns(FutureWarning, match=r"model\.embed_dim, model\.dropout, model\.drop_path_rate are deprecated"):
        model, label_set = load_segmentor(tmp_path / "old.pt")
    assert label_set == "toy" and model.feat_dim == 32 and _shapes(model) == _shapes(saved)
