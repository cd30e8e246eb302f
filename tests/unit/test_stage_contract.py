"""The stage contract (`diga.modules.contract`): every stage module declares its inputs, outputs, memory and
validation sets, and the layers above ask only the contract — no stage class name and no stage-specific key in
`diga/tasks/` or `diga/config/`."""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from hydra.utils import get_class

from diga.config.preflight import stage_inputs
from diga.modules.base import SegmentationModule
from diga.modules.contract import StageInput, check_stage_class, file_input
from diga.modules.source_only import SourceOnlyModule
from diga.utils.artifacts import FINAL_MODEL
from tests.helpers import compose_cfg, tiny_toy_overrides

SRC = Path(__file__).resolve().parents[2] / "src" / "diga"
STAGE_YAMLS = sorted((SRC / "conf" / "stage").glob("*.yaml"))
GENERIC = {"stage.init_from", "model.pretrained", "model.weights"}  # every segmentation stage's


def _stage_classes() -> list[type]:
    """The `stage.module` class of every shipped stage YAML that trains."""
    found = []
    for path in STAGE_YAMLS:
        module = (yaml.safe_load(path.read_text()).get("stage") or {}).get("module") or {}
        if "_target_" in module:
            found.append(get_class(module["_target_"]))
    return sorted(set(found), key=lambda c: c.__name__)


def test_every_shipped_stage_module_implements_the_contract() -> None:
    classes = _stage_classes()
    assert len(classes) >= 5, classes  # source_only, translator, warmup, selftrain, daformer
    for cls in classes:
        check_stage_class(cls)
        assert isinstance(cls.validates, bool) and cls.produces, cls
        assert all(isinstance(i, StageInput) for i in cls.declared_inputs({"module": {}})), cls


def _own_parameters(cls: type) -> set[str]:
    """Constructor arguments that only this stage has (not the shared SegmentationModule ones)."""
    shared = set(inspect.signature(SegmentationModule.__init__).parameters)
    own: set[str] = set()
    for klass in cls.__mro__:
        if klass in (SegmentationModule, object) or not klass.__module__.startswith("diga.modules"):
            continue
        own |= {p for p in inspect.signature(klass.__init__).parameters if p not in shared}
    return own - {"self", "args", "kwargs"}


def _declared_keys(cls: type) -> set[str]:
    """Keys a stage's declared inputs are set with, for a config that switches every input on."""
    stage = {"pseudo_labels": "p", "module": {"translator": {"kind": "learned", "checkpoint": "t"}, "w_percep": 1,
             "vgg_weights": "v", "centroids_path": "c", "model": {"pretrained": "w", "weights": "w"}}}  # fmt: skip
    return {k for i in cls.declared_inputs(stage) for k in re.findall(r"[a-z_]+(?:\.[a-z_]+)+", i.set_with)} - GENERIC


def _code_words(path: Path) -> list[tuple[int, str]]:
    """Identifiers, attribute names and string constants of a file — not its comments or docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, ast.keyword) and node.arg:
            out.append((node.value.lineno, node.arg))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
    return out


def test_tasks_and_config_know_no_stage_by_name_or_key() -> None:
    classes = _stage_classes()
    names = {c.__name__ for c in classes}
    keys = set().union(*(_declared_keys(c) for c in classes))
    params = set().union(*(_own_parameters(c) for c in classes))
    assert {"TranslatorModule", "SelfTrainModule"} <= names
    assert {"stage.pseudo_labels", "stage.centroids", "stage.module.translator.checkpoint"} <= keys
    assert {"w_percep", "vgg_weights", "centroids_path", "translator"} <= params
    forbidden = [re.compile(rf"\b{re.escape(n)}\b") for n in names]
    forbidden += [re.compile(rf"(?<![\w.]){re.escape(k)}(?![\w])") for k in keys]
    forbidden += [re.compile(rf"(^|\bmodule\.|\.get\(){re.escape(p)}$|\bmodule\.{re.escape(p)}\b") for p in params]
    bad = []
    for folder in ("tasks", "config"):
        for path in sorted((SRC / folder).rglob("*.py")):
            for line, word in _code_words(path):
                if any(p.search(word) for p in forbidden):
                    bad.append(f"{path.relative_to(SRC)}:{line}: {word!r}")
    assert not bad, "stage knowledge outside the stage modules (declare it in the contract instead):\n" + "\n".join(bad)


def test_the_grep_sees_a_stage_key_where_it_would_be_a_leak(tmp_path: Path) -> None:
    """The check above must be able to fail: the old pre-flight's lines are caught."""
    leak = tmp_path / "leak.py"
    leak.write_text('def f(module, st):\n    """Mentions w_percep in prose: allowed."""\n'
                    '    if str(module["_target_"]).endswith("TranslatorModule"):\n'
                    '        return module.get("w_percep"), "stage.centroids", st.module.vgg_weights\n')  # fmt: skip
    words = [w for _, w in _code_words(leak)]
    assert "TranslatorModule" in words and "w_percep" in words and "stage.centroids" in words
    assert "vgg_weights" in words and "Mentions w_percep in prose: allowed." not in words


class ExtraInputStage(SourceOnlyModule):
    """A new stage, written the way the docs say: it declares the one extra file it reads."""

    produces: ClassVar[tuple[str, ...]] = (FINAL_MODEL,)

    @classmethod
    def declared_inputs(cls, stage: Mapping[str, Any]) -> list[StageInput]:
        return [*super().declared_inputs(stage),
                *file_input("earlier output", "depth maps", stage["module"].get("depth_dir"),
                            "stage.module.depth_dir", "the depth/ folder of a depth run")]  # fmt: skip


def test_a_new_stage_is_checked_by_preflight_without_touching_tasks_or_config(tmp_path: Path) -> None:
    cfg = compose_cfg([*tiny_toy_overrides(tmp_path, tmp_path / "data"), "stage=source_only",
                       f"stage.module._target_={ExtraInputStage.__module__}.ExtraInputStage",
                       f"+stage.module.depth_dir={tmp_path}/depth"])  # fmt: skip
    found = {i.set_with: i for i in stage_inputs(cfg)}
    assert found["stage.module.depth_dir"].path == tmp_path / "depth"
    assert found["stage.module.depth_dir"].missing() == [tmp_path / "depth"]


def test_a_module_without_the_contract_is_refused_by_name() -> None:
    class Bare:
        pass

    with pytest.raises(TypeError, match=r"Bare.*lacks validates, produces, declared_inputs"):
        check_stage_class(Bare)
