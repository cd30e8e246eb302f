"""The repository documents itself: no file may point at documents that live outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# internal specifications that never ship, and section signs citing them
OUTSIDE = re.compile(r"METHOD\.md|ECOSYSTEM\.md|ECOSYSTEM §|\.\./shared/|shared/docs|§\s?\d")


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        return [REPO / f for f in out.splitlines() if (REPO / f).is_file()]
    except (OSError, subprocess.CalledProcessError):  # an sdist without git: walk the tree
        return [p for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts]


def test_no_file_refers_to_documents_outside_the_repository() -> None:
    hits = []
    for path in _tracked_files():
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files
        hits += [f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}" for n, line in enumerate(text.splitlines(), 1)
                 if OUTSIDE.search(line)]  # fmt: skip
    assert hits == [], "\n".join(hits)


def test_docs_link_only_to_files_that_exist() -> None:
    broken = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)} → {target}")
    assert broken == [], broken


def test_configuration_reference_is_up_to_date() -> None:
    """docs/configuration.md is generated from conf/: a changed default or meaning must regenerate it (make docs)."""
    from tools.config_reference import render_reference

    committed = (REPO / "docs" / "configuration.md").read_text()
    assert render_reference() == committed, "docs/configuration.md is stale: run `make docs`"


def test_readme_layout_lists_every_package_and_only_existing_ones() -> None:
    """The README's Layout section is how a newcomer finds a concept: it must match the tree."""
    root = REPO
    readme = (root / "README.md").read_text()
    layout = readme[readme.index("## Layout") :].split("```")[1]
    listed = set(re.findall(r"^src/diga/(\w+)/", layout, flags=re.MULTILINE))
    packages = {p.parent.name for p in (root / "src" / "diga").glob("*/__init__.py")}
    assert listed == packages, f"missing from the README: {packages - listed}; not in the tree: {listed - packages}"
    for top in re.findall(r"^(\w+)/ ", layout, flags=re.MULTILINE):
        assert (root / top).is_dir(), top
