"""Low-level packages never import high-level ones (utils ← data ← models ← method ops ← evaluation ← modules ←
config, pipelines ← tasks ← command-line entry points). Read from the source with `ast`, so lazy imports inside
functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "diga"
LAYERS = [
    {"utils"},
    {"data"},
    {"models"},
    {"augment", "mixing", "losses", "centroids", "pseudo_labels", "translation", "uda"},  # the method's operations
    {"evaluation"},
    {"modules", "offline", "callbacks", "loggers"},  # training stages, prediction-only stages
    {"config", "pipelines"},  # composing and checking configs (pre-flight asks the stage contract); method recipes
    {"tasks"},
    # command-line entry points
    {"train", "evaluate", "predict", "submit", "export", "env", "check_data", "ablation", "convert"},
]


def _layer(top: str) -> int:
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"diga.{top} is not placed in a layer: add it to LAYERS")


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return [m for m in out if m == "diga" or m.startswith("diga.")]


def test_no_module_imports_a_higher_layer() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue
        own = _layer(rel.parts[0].removesuffix(".py"))
        for mod in _imports(path):
            parts = mod.split(".")
            if len(parts) < 2:
                continue
            if _layer(parts[1]) > own:
                bad.append(f"{rel}: imports {mod}")
    assert not bad, "\n".join(bad)
