"""Every documented command works when pasted into bash.

Every `python -m diga.<command> …` line in the README and docs/ composes: a renamed key breaks this test, not a
user. Every override they show — in code blocks and in inline `code` — reaches Hydra as written: bash expands
`{a,b}`, `$x`, `*` and `[…]` in an unquoted word, so `streams=[{resize:null,batch_size:2}]` would arrive as two
overrides. Such overrides are quoted whole, Hydra's convention; this runs each through a real bash to check.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^python -m diga\.(train|evaluate|predict|export|check_data|submit)\b(.*)$")
SHELL_COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:python|make|torchrun)\b")
WORD = re.compile(r"""(?:[^\s'"]+|'[^']*'|"(?:\\.|[^"\\])*")+""")  # one shell word as written, quotes kept
OVERRIDE = re.compile(r"^[+~]*[A-Za-z_][\w.@/-]*=")
SHELL_SPECIAL = re.compile(r"""[{}\[\]*?()$!~'"\\]""")  # what bash may expand, or quotes that must keep it
EXPANDED = re.compile(r"[{}\[\]*?()$!]")  # what bash, zsh or fish may expand: only inside quotes
QUOTED = re.compile(r"""'[^']*'|"(?:\\.|[^"\\])*["]""")


def _placeholders(text: str) -> str:
    """`<run>`, `…`: what the reader fills in."""
    return re.sub(r"<[^>]+>|…", "x", text)


def code_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line inside the file's code blocks, continuations joined, comments dropped."""
    in_block, pending, start = False, "", 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        start = start if pending else n
        line = pending + line.split("  #", 1)[0].strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        yield start, line


def inline_spans(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every inline `code` span outside code blocks (a span may wrap within a paragraph)."""
    in_block, paragraph, start = False, [], 0
    for n, line in enumerate([*path.read_text().splitlines(), ""], 1):
        if line.lstrip().startswith("```"):
            in_block = not in_block
        if in_block or line.lstrip().startswith("```") or not line.strip():
            text = "\n".join(paragraph)
            for span in re.finditer(r"`([^`]+)`", text):
                yield start + text.count("\n", 0, span.start()), span.group(1).replace("\n", " ")
            paragraph = []
            continue
        start = start if paragraph else n
        paragraph.append(line.strip())


def readme_commands() -> list[tuple[str, list[str]]]:
    """(config name, overrides) of every diga command line in the README's and docs' code blocks; commands that
    read a user's own config folder (`hydra.searchpath`) are left out."""
    out = []
    for path in DOCS:
        for _, line in code_lines(path):
            match = COMMAND.match(_placeholders(line))
            if not match or "hydra.searchpath" in line:
                continue
            args = [a for a in shlex.split(match.group(2)) if a != "-m" and not a.startswith("hydra/")]
            # a multirun sweep composes as its first point
            out.append((match.group(1), [re.sub(r"^([\w.]+=)([^,\[\]{}]+),.*$", r"\1\2", a) for a in args]))
    return out


def documented_overrides() -> list[tuple[str, str]]:
    """(where, word as written) of every override with characters a shell treats specially, in command lines of
    code blocks and in inline spans that start with an override."""
    out = []
    for path in DOCS:
        where = path.relative_to(ROOT)
        texts = [(n, _placeholders(line)) for n, line in code_lines(path) if SHELL_COMMAND.match(line)]
        spans = [(n, _placeholders(span)) for n, span in inline_spans(path)]
        texts += [(n, s) for n, s in spans if SHELL_COMMAND.match(s) or OVERRIDE.match(s.lstrip("'\""))]
        for n, text in texts:
            for word in WORD.findall(text):
                if SHELL_SPECIAL.search(word) and OVERRIDE.match("".join(shlex.split(word))):
                    out.append((f"{where}:{n}", word))
    return out


def test_the_readme_has_commands_to_check() -> None:
    names = {name for name, _ in readme_commands()}
    assert {"train", "evaluate", "predict", "export", "check_data"} <= names


def test_the_docs_have_overrides_to_paste() -> None:
    words = {(where.split(":")[0], word) for where, word in documented_overrides()}
    assert ("README.md", "'inference.crop_size=[512,1024]'") in words  # in a code block
    assert ("docs/troubleshooting.md", "'hydra.searchpath=[file:///abs/path]'") in words  # inline


@pytest.mark.parametrize(("config_name", "overrides"), readme_commands(), ids=lambda v: " ".join(v)[:80])
def test_readme_command_composes(config_name: str, overrides: list[str]) -> None:
    cfg = compose_cfg(overrides, config_name=config_name)
    assert cfg is not None


@pytest.mark.parametrize(("where", "word"), documented_overrides(), ids=lambda v: v[:80])
def test_documented_override_survives_bash(where: str, word: str, tmp_path: Path) -> None:
    """In an empty folder, with nothing set, and globs that match nothing are an error (zsh's default)."""
    intended = shlex.split(word)
    assert not EXPANDED.search(QUOTED.sub("", word)), f"{where}: {word} is not quoted whole: {shlex.quote(intended[0])}"
    proc = subprocess.run(["bash", "-O", "failglob", "-c", f"printf '%s\\0' {word}"], capture_output=True, text=True,
                          cwd=tmp_path, env={"PATH": os.environ["PATH"]})  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.split("\0")[:-1] == intended, (
        f"{where}: bash turns {word} into {proc.stdout.split(chr(0))[:-1]} {proc.stderr.strip()}; quote it whole: "
        f"{shlex.quote(intended[0])}"
    )
