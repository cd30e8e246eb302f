"""Every `python -m diga.<command> …` line in the README composes: a renamed key breaks this test, not a user."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import compose_cfg

README = Path(__file__).resolve().parents[2] / "README.md"
COMMAND = re.compile(r"^python -m diga\.(train|evaluate|predict|export|check_data)\b(.*)$")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(config name, overrides) of every command line inside the README's code blocks (continuations joined)."""
    out, in_block, pending = [], False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        line = pending + line.split("  #", 1)[0].strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        match = COMMAND.match(re.sub(r"<[^>]+>|…", "x", line))  # placeholders the reader fills in
        if match:
            args = [a for a in shlex.split(match.group(2)) if a != "-m" and not a.startswith("hydra/")]
            # a multirun sweep composes as its first point
            out.append((match.group(1), [re.sub(r"^([\w.]+=)([^,\[\]{}]+),.*$", r"\1\2", a) for a in args]))
    return out


def test_the_readme_has_commands_to_check() -> None:
    names = {name for name, _ in readme_commands()}
    assert {"train", "evaluate", "predict", "export", "check_data"} <= names


@pytest.mark.parametrize(("config_name", "overrides"), readme_commands(), ids=lambda v: " ".join(v)[:80])
def test_readme_command_composes(config_name: str, overrides: list[str]) -> None:
    cfg = compose_cfg(overrides, config_name=config_name)
    assert cfg is not None
