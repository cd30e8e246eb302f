"""Generate docs/configuration.md: every key of every stage, its value in each paper experiment, the file that sets
it and the comment that explains it — from the config tree itself, so the reference cannot drift from the code.

`make docs` rewrites the file; a test fails when it is out of date. The values are what
`python -m diga.train experiment=E stage=S` composes (interpolations as written, e.g. `${seed}`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from diga.config import CONFIG_DIR, compose_config

EXPERIMENTS = ("gta2cs", "synthia2cs", "gta_dg", "cs_semi")
STAGES = ("source_only", "translator", "warmup", "pseudolabel", "centroids", "selftrain", "daformer", "pipeline")
# keys outside `stage.` that every training stage reads; `datamodule.source/target/val` are listed per data config
COMMON = ("seed", "run_id", "ckpt_path", "overwrite", "steps", "val_every", "ckpt_every", "log_images_every",
          "memory_estimate", "selection", "label_set", "report_pooled", "report_means", "model", "optimizer",
          "scheduler", "inference", "datamodule", "trainer")  # fmt: skip
# per-stage data settings (the authors chose batch compositions per experiment and stage: conf/recipe/)
STAGE_DATA = ("datamodule.source.loader", "datamodule.target.loader")
TRAINING_STAGES = ("source_only", "translator", "warmup", "selftrain", "daformer")
NOT_A_FILE = ("stage", "experiment", "recipe", "ablation", "local")


# --- YAML comments -------------------------------------------------------------------------------------------
def yaml_comments(path: Path, prefix: str = "") -> dict[str, str]:
    """`flat.key → comment` of a YAML file: the inline comment of a key's line, else the full-line comments right
    above it. Keys of a flow mapping (`a: {b: 1}  # c`) inherit the line's comment."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    seen_key = False  # the comment block above the first key is the file's header, not that key's
    last: tuple[str, int] | None = None  # (flat key, column of its inline comment)
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped or stripped.startswith("# @package"):
            pending, last = ([] if not stripped else pending), (None if not stripped else last)
            continue
        if stripped.startswith("#"):
            column = len(line) - len(stripped)
            if last is not None and column >= last[1] - 2:  # a wrapped inline comment: continues the key above
                out[last[0]] = f"{out[last[0]]} {stripped.lstrip('# ').strip()}"
            else:
                pending.append(stripped.lstrip("# ").strip())
            continue
        match = re.match(r"(\s*)([A-Za-z_][\w@./-]*)\s*:(.*)$", line)
        if not match or stripped.startswith("- "):
            pending = []
            continue
        indent, key, rest = len(match[1]), match[2], match[3]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path_key = ".".join([*(k for _, k in stack), key])
        value, comment = _split_comment(rest)
        text = comment or ("" if key in ("_target_", "defaults") or not seen_key else " ".join(pending))
        seen_key = True
        if text:
            out[f"{prefix}{path_key}"] = text
        last = (f"{prefix}{path_key}", line.index("#", len(match[1]) + len(key))) if comment else None
        if value.startswith("{") and comment:
            for sub in re.findall(r"([A-Za-z_]\w*)\s*:", value):
                out.setdefault(f"{prefix}{path_key}.{sub}", comment)
        if not value:
            stack.append((indent, key))
        pending = []
    return out


def _split_comment(rest: str) -> tuple[str, str]:
    """Value and comment of the text after `key:` (a `#` inside quotes is not a comment)."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "\"'" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


# --- where a value comes from --------------------------------------------------------------------------------
def config_files(cfg: DictConfig, experiment: str, stage: str) -> list[tuple[Path, str]]:
    """(file, mount prefix) of everything the composition used, lowest precedence first."""
    files: list[tuple[Path, str]] = [(CONFIG_DIR / "train.yaml", "")]
    stage_groups = []
    for group_at, choice in cfg.hydra.runtime.choices.items():
        group, _, package = str(group_at).partition("@")
        if choice is None or group.startswith("hydra") or group in NOT_A_FILE:
            continue
        path = CONFIG_DIR / group / f"{choice}.yaml"
        if path.is_file():
            prefix = "" if _is_global(path) else f"{package or group.replace('/', '.')}."
            target = stage_groups if package.startswith("stage.") else files
            target += [(p, prefix) for p in _with_defaults(path)]
    stage_file = CONFIG_DIR / "stage" / f"{stage}.yaml"
    files += [*stage_groups, (stage_file, "")]
    files.append((CONFIG_DIR / "experiment" / f"{experiment}.yaml", ""))
    recipe = CONFIG_DIR / "recipe" / experiment / f"{stage}.yaml"
    if recipe.is_file():
        files.append((recipe, ""))
    return files


def _with_defaults(path: Path) -> list[Path]:
    """`path` after the files of the same group its own defaults list pulls in (`defaults: [whole, _self_]`)."""
    raw = OmegaConf.load(path)
    out: list[Path] = []
    for entry in (raw.get("defaults") or []) if isinstance(raw, DictConfig) else []:
        if isinstance(entry, str) and entry != "_self_" and "/" not in entry:
            sibling = path.parent / f"{entry}.yaml"
            if sibling.is_file():
                out += _with_defaults(sibling)
    return [*out, path]


def _is_global(path: Path) -> bool:
    return any(line.strip() == "# @package _global_" for line in path.read_text(encoding="utf-8").splitlines()[:3])


def _defined_keys(path: Path, prefix: str) -> set[str]:
    raw = OmegaConf.load(path)
    raw = OmegaConf.masked_copy(raw, [k for k in raw if k != "defaults"]) if isinstance(raw, DictConfig) else raw
    return {f"{prefix}{k}" for k, _ in _flatten(raw)}


# --- flattening ----------------------------------------------------------------------------------------------
def _flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, DictConfig) and len(node):
        for key in node:
            child = node._get_node(key)
            yield from _flatten(child if isinstance(child, (DictConfig, ListConfig)) else _raw(node, key),
                                f"{prefix}{key}.")  # fmt: skip
        return
    yield prefix.rstrip("."), node


def _raw(node: DictConfig, key: Any) -> Any:
    return node._get_node(key)._value()  # interpolations as written


def _render(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, dict)):
        text = _compact(value)
    else:
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    text = text.replace("|", "\\|")
    return f"`{text}`" if text else "`''`"


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# --- the document ----------------------------------------------------------------------------------------------
def _stages_in_pipelines() -> dict[str, set[str]]:
    from diga.tasks.pipeline_plan import plan

    out = {}
    for exp in EXPERIMENTS:
        cfg = compose_config([f"experiment={exp}", "stage=pipeline", "paths.output_dir=/run"])
        out[exp] = {s.stage for s in plan(cfg, Path("/run"))} | {"pipeline"}
    return out


def _cell(per_exp: Mapping[str, Any], experiment: str, runs: bool) -> str:
    if not runs:
        return "—"
    return _render(per_exp[experiment]) if experiment in per_exp else "n/a"


def _table(rows: Mapping[str, dict[str, Any]], comments: Mapping[str, str], where: Mapping[str, str],
           used: Mapping[str, bool], key_prefix: str) -> list[str]:  # fmt: skip
    head = ["key", *EXPERIMENTS, "set in", "meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ordered = sorted(rows.items(), key=lambda kv: kv[0].startswith(f"{key_prefix}module."))  # stable: stage keys first
    for key, per_exp in ordered:
        values = [
            ("—" if not used.get(e, True) else _render(per_exp[e]) if e in per_exp else "n/a") for e in EXPERIMENTS
        ]
        short = key[len(key_prefix) :] if key.startswith(key_prefix) else key
        lines.append(f"| `{short}` | " + " | ".join(values) + f" | {where.get(key, '')} | "
                     f"{comments.get(key, '').replace('|', '/')} |")  # fmt: skip
    return lines


def _collect(overrides_of: Mapping[str, list[str]], stage: str, select: tuple[str, ...]
             ) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, str]]:  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    comments: dict[str, str] = {}
    sources: dict[str, dict[str, list[str]]] = {}
    for exp, overrides in overrides_of.items():
        cfg = compose_config(overrides)
        files = config_files(cfg, exp, stage)
        defined = [(path, prefix, _defined_keys(path, prefix)) for path, prefix in files]
        notes = {path: yaml_comments(path, prefix) for path, prefix in files}
        for top in select:
            node = OmegaConf.select(cfg, top, throw_on_resolution_failure=False)
            if node is None:
                continue
            if isinstance(node, (DictConfig, ListConfig)):
                items: Any = _flatten(node, f"{top}.")
            else:
                items = [(top, _raw(cfg, top))]
            reads_target = bool(OmegaConf.select(cfg, "datamodule.use_target", throw_on_resolution_failure=False))
            for key, value in items:
                if select == COMMON and key.startswith(("datamodule.source.", "datamodule.target.", "datamodule.val.")):
                    continue
                if key.startswith("datamodule.target.") and not reads_target:
                    continue  # the stage does not read target images in this experiment
                rows.setdefault(key, {})[exp] = value
                origin = next((p for p, _, keys in reversed(defined) if key in keys or _parent_in(key, keys)), None)
                if origin is not None:
                    rel = str(origin.relative_to(CONFIG_DIR)).replace(f"/{exp}.yaml", "/<E>.yaml")
                    sources.setdefault(key, {}).setdefault(rel.replace(f"recipe/{exp}/", "recipe/<E>/"), []).append(exp)
                # meaning: from the first experiment that has the key — the comment of the file that sets the
                # value, else of a file below it in the same composition
                if key not in comments:
                    note = notes.get(origin, {}).get(key) if origin else None
                    comments[key] = note or next((n[key] for n in reversed(list(notes.values())) if key in n), "")
                    parts = key.split(".")
                    for i in range(len(parts) - 1, 0, -1):  # a mapping's comment covers its keys
                        if comments[key]:
                            break
                        parent = ".".join(parts[:i])
                        comments[key] = next((n[parent] for n in reversed(list(notes.values())) if parent in n), "")
    where = {}
    for key, by_file in sources.items():
        ordered = sorted(by_file.items(), key=lambda fe: -len(fe[1]))
        every = len(ordered) == 1 and len(ordered[0][1]) == len(overrides_of)
        parts = [f"`{f}`" + ("" if every else f" ({', '.join(es)})") for f, es in ordered]
        where[key] = "; ".join(parts)
    return rows, comments, where


def _parent_in(key: str, keys: set[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in keys for i in range(1, len(parts)))


def render_reference() -> str:
    used = _stages_in_pipelines()
    out = [
        "# Configuration reference",
        "",
        "Generated by `make docs` from the config tree (`conf/`); do not edit by hand. Each table lists every key of a",
        "stage as `python -m diga.train experiment=E stage=S` composes it for the four paper experiments, the config",
        "file that sets it (when an experiment's recipe changes it, that file is named with the experiment) and the",
        "comment next to it in that file. Interpolations are shown as written (`${seed}` follows the top-level",
        "`seed`). `<E>` in a file name is the experiment. `—`: the experiment's `stage=pipeline` does not run this",
        "stage; `n/a`: the key does not exist in that composition (e.g. another model, or target data the stage does",
        "not read). Any key can be overridden on the command line (`stage.module.kd_weight=0.5`); a value of the wrong",
        "type is rejected before anything is built.",
        "",
        "Contents: [common keys](#common-keys) · " + " · ".join(f"[`{s}`](#stage-{s})" for s in STAGES),
        "",
    ]
    rows, comments, where = _collect({e: [f"experiment={e}", "stage=selftrain"] for e in EXPERIMENTS}, "selftrain",
                                     COMMON)  # fmt: skip
    out += ["## Common keys", "", "Read by every training stage (values as composed for `stage=selftrain`).", ""]
    out += _table(rows, comments, where, {}, "")
    for stage in STAGES:
        data = STAGE_DATA if stage in TRAINING_STAGES else ()
        rows, comments, where = _collect({e: [f"experiment={e}", f"stage={stage}"] for e in EXPERIMENTS}, stage,
                                         ("stage", *data))  # fmt: skip
        # the DAFormer/MIC baseline runs in its own experiments (gta2cs_daformer, …), not in DiGA's pipelines
        flags = {e: stage in used[e] or stage == "daformer" for e in EXPERIMENTS}
        reads = (
            (
                " then the data streams it trains on (batch composition: `streams`; images per step = the sum of"
                " their `batch_size`)"
            )
            if data
            else ""
        )
        out += ["", f"## Stage `{stage}`", "", f"Keys under `stage.`{reads}.", ""]
        out += _table(rows, comments, where, flags, "stage.")
    out += [
        "",
        "## Data configs",
        "",
        "Dataset-level keys of `conf/data/*.yaml` (mounted at `datamodule.source`,",
        "`datamodule.target` and `datamodule.val.<name>`); the `loader` block of source and target is listed with",
        "each stage above.",
        "",
    ]
    out += _data_tables()
    return "\n".join(out) + "\n"


def _data_tables() -> list[str]:
    lines = ["| data config | key | value | meaning |", "|---|---|---|---|"]
    for path in sorted((CONFIG_DIR / "data").glob("*.yaml")):
        notes = yaml_comments(path)
        for key, value in _flatten(OmegaConf.load(path)):
            if key == "defaults":
                continue
            lines.append(f"| `{path.stem}` | `{key}` | {_render(value)} | {notes.get(key, '').replace('|', '/')} |")
    return lines


def write_reference(path: str | Path) -> Path:
    from diga.utils.io import atomic_write_bytes

    atomic_write_bytes(path, render_reference().encode())
    return Path(path)


if __name__ == "__main__":
    import sys

    print(write_reference(sys.argv[1] if len(sys.argv) > 1 else "docs/configuration.md"))
