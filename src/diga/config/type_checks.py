"""Type-check a composed config against the constructors it will be passed to, before anything is built.

Hydra accepts any string on the command line (`trainer.max_steps=abc`); without this the mistake surfaces as a
`TypeError` deep inside Lightning, minutes later and naming only the group. Every node with a `_target_` is matched
with its callable's signature and each value with the parameter's annotation (validated by pydantic in its lax
mode, so `3` is a valid float). Parameters without an annotation, annotations that cannot be evaluated and values
that are themselves `_target_` nodes are not judged: this check can miss a mistake but must never block a valid run.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from diga.utils.hydra import to_plain

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if not OmegaConf.is_missing(node, key) and not _is_interpolation_error(node, key):
                yield from _nodes(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from _nodes(item, f"{path}[{i}]")


def _is_interpolation_error(node: DictConfig, key: Any) -> bool:
    try:
        node[key]
    except Exception:  # unresolved interpolations are reported by the missing-key check, not here
        return True
    return False


@functools.cache
def _annotations(target: str) -> dict[str, Any]:
    """Evaluated parameter annotations of `target`; for a class, of every `__init__` along its MRO (subclasses that
    forward `**kwargs` to their parent still get their parent's parameters checked)."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:
        return {}
    if inspect.isclass(obj):
        functions = [c.__dict__["__init__"] for c in inspect.getmro(obj) if "__init__" in c.__dict__]
    else:
        functions = [obj]
    out: dict[str, Any] = {}
    for fn in functions:
        for name, ann in _function_annotations(fn).items():
            out.setdefault(name, ann)
    return out


def _function_annotations(fn: Callable[..., Any]) -> dict[str, Any]:
    """One by one, so that one name imported only under `TYPE_CHECKING` costs just its own parameter."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    namespace = {**vars(typing), **getattr(inspect.unwrap(fn), "__globals__", {})}
    out = {}
    for name, p in params.items():
        ann = p.annotation
        if ann is inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if isinstance(ann, str):
            try:
                ann = eval(ann, namespace)  # the annotation text of an installed library
            except Exception:
                continue
        out[name] = ann
    return out


@functools.cache
def _adapter(annotation: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # an annotation pydantic cannot express
        return None


def _holds_target(value: Any) -> bool:
    if isinstance(value, dict):
        return "_target_" in value or any(_holds_target(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_target(v) for v in value)
    return False


def _describe(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    return text or str(annotation).replace("typing.", "")


STREAM = "{resize:null,batch_size:2}"


def stream_problems(cfg: DictConfig) -> list[str]:
    """The training streams are plain dicts that no annotation types. Unquoted in bash, `streams=[{a,b}]` is brace
    expanded into two overrides, `streams=[a]` and `streams=[b]`, and arrives as a list of strings."""
    out = []
    for domain in ("source", "target"):
        key = f"datamodule.{domain}.loader.streams"
        try:
            streams = to_plain(OmegaConf.select(cfg, key, default=None, throw_on_missing=True))
        except Exception:  # reported by the missing-key check
            continue
        if streams is not None and not isinstance(streams, list):
            out.append(f"{key}={streams!r}: expected a list of streams such as [{STREAM}]")
        for i, stream in enumerate(streams if isinstance(streams, list) else []):
            if isinstance(stream, str):
                out.append(f"{key}[{i}]={stream!r}: expected a mapping such as {STREAM}; the override probably lost "
                           f"its braces to the shell: quote it whole, e.g. '{key}=[{STREAM}]'")  # fmt: skip
            elif not isinstance(stream, dict):
                out.append(f"{key}[{i}]={stream!r}: expected a mapping such as {STREAM}")
    return out


def type_problems(cfg: DictConfig) -> list[str]:
    """One line per value that its constructor's annotation rejects, naming the full key."""
    from pydantic import ValidationError

    problems: dict[tuple[str, str, str], str] = {}  # one line per mistake, under its shortest key (the one typed)
    for path, node in sorted(_nodes(cfg, ""), key=lambda pn: (pn[0].count("."), pn[0])):
        target = str(node["_target_"])
        hints = _annotations(target)
        for key in node:
            if key in HYDRA_KEYS or key not in hints or OmegaConf.is_missing(node, key):
                continue
            try:
                raw = node[key]
                value = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, (DictConfig, ListConfig)) else raw
            except Exception:
                continue
            if value is None or _holds_target(value) or (adapter := _adapter(hints[key])) is None:
                continue
            try:
                adapter.validate_python(value)
            except ValidationError:
                problems.setdefault((target, str(key), repr(value)), f"{path}.{key}={value!r}: expected "
                                    f"{_describe(hints[key])} (parameter `{key}` of {target})")  # fmt: skip
            except Exception:  # a validator of an arbitrary type that does not apply to config values
                continue
    return [*problems.values(), *stream_problems(cfg)]
