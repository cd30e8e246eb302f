"""Datasets read straight from their official zip archives, as if they had been unpacked.

GTA5 alone is twenty zip parts; unpacking every benchmark costs a day and doubles the disk. When a dataset's folder
holds its archives instead of the unpacked layout, `dataset_root` returns an `ArchivePath`: a read-only path into
the members of all the folder's `*.zip` files merged into one tree. Dataset classes walk it with the same `/`,
`glob`, `is_dir` and `exists` they use on disk, so they find the same samples in the same order, and
`diga.data.io` reads a member's bytes instead of a file. Per dataset class, `archive_members` rules rename members
whose archive path differs from the unpacked layout (BDD100K's `bdd100k/images/10k/…`), and a single wrapper
folder around an archive's whole content is looked through.

Zip handles are opened lazily, one per archive and process: a DataLoader worker forked from the main process opens
its own instead of sharing a file offset with its parent.
"""

from __future__ import annotations

import fnmatch
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

Rules = tuple[tuple[str, str], ...]  # (regex on the member name, replacement giving the unpacked path)


@dataclass
class ArchiveTree:
    """Members of the zip archives in one folder, keyed by their path in the unpacked layout."""

    folder: Path
    archives: tuple[Path, ...]
    rules: Rules = ()
    files: dict[str, tuple[int, str]] = field(default_factory=dict)  # layout path → (archive index, member)
    dirs: set[str] = field(default_factory=lambda: {""})
    kids: dict[str, set[str]] = field(default_factory=dict)  # folder → the paths directly inside it

    def add_member(self, archive: int, member: str, rename: str) -> None:
        from diga.data.io import DatasetError

        if rename in self.files:
            other = self.files[rename]
            raise DatasetError(
                f"{self.archives[archive]}: member {member!r} is also in {self.archives[other[0]]} as {other[1]!r}; "
                "two archives hold the same file"
            )
        self.files[rename] = (archive, member)
        parts = rename.split("/")
        for i in range(1, len(parts) + 1):
            parent, path = "/".join(parts[: i - 1]), "/".join(parts[:i])
            self.kids.setdefault(parent, set()).add(path)
            if i < len(parts):
                self.dirs.add(path)

    def read(self, rel: str) -> bytes:
        archive, member = self.files[rel]
        return _handle(self.archives[archive]).read(member)

    def where(self, rel: str) -> str:
        """`archive.zip:member`, the name a user finds the file under."""
        archive, member = self.files[rel]
        return f"{self.archives[archive]}:{member}"

    def children(self, rel: str) -> list[str]:
        return sorted(self.kids.get(rel, ()))


class ArchivePath(PurePosixPath):
    """A path below a dataset folder whose files live in that folder's zip archives (see `archive_root`).

    Pure path arithmetic (`/`, `name`, `stem`, `parent`, `relative_to`) is `PurePosixPath`'s; the file-system
    questions are answered from the archives' index. Each tree gets its own subclass, so derived paths keep it.
    """

    tree: ClassVar[ArchiveTree]
    tree_key: ClassVar[tuple[Any, ...]]

    def _rel(self) -> str:
        rel = self.relative_to(self.tree.folder).as_posix()
        return "" if rel == "." else rel

    def is_dir(self) -> bool:
        try:
            return self._rel() in self.tree.dirs
        except ValueError:
            return False

    def is_file(self) -> bool:
        try:
            return self._rel() in self.tree.files
        except ValueError:
            return False

    def exists(self) -> bool:
        return self.is_dir() or self.is_file()

    def iterdir(self) -> Iterator[ArchivePath]:
        for child in self.tree.children(self._rel()):
            yield type(self)(self.tree.folder, child)

    def glob(self, pattern: str) -> Iterator[ArchivePath]:
        """Segment-wise `fnmatch`, as `Path.glob` for patterns without `**`; sorted."""
        parts = [p for p in pattern.split("/") if p]
        base = self._rel()
        level = [base]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            level = [c for rel in level if rel in self.tree.dirs for c in self.tree.children(rel)
                     if fnmatch.fnmatchcase(c.rsplit("/", 1)[-1], part)
                     and (last or c in self.tree.dirs)]  # fmt: skip
        for rel in sorted(level):
            yield type(self)(self.tree.folder, rel)

    def rglob(self, pattern: str) -> Iterator[ArchivePath]:
        base = self._rel()
        prefix = f"{base}/" if base else ""
        for rel in sorted(p for p in (*self.tree.files, *self.tree.dirs) if p.startswith(prefix) and p):
            if fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern):
                yield type(self)(self.tree.folder, rel)

    def read_bytes(self) -> bytes:
        from diga.data.io import DatasetError

        rel = self._rel()
        if rel not in self.tree.files:
            raise DatasetError(f"{self}: file not found in the archives of {self.tree.folder}")
        try:
            return self.tree.read(rel)
        except (OSError, zipfile.BadZipFile, EOFError) as e:  # a damaged member or archive
            raise DatasetError(f"{self.tree.where(rel)}: cannot read archive member ({e})") from e

    def where(self) -> str:
        """The archive and member this path is read from (for error messages)."""
        rel = self._rel()
        return self.tree.where(rel) if rel in self.tree.files else str(self)

    def __reduce__(self) -> tuple[Any, ...]:  # a dynamic class: rebuild the tree (cached) in the other process
        return (_rebuild, (self.tree_key, self._rel()))


def _rebuild(key: tuple[Any, ...], rel: str) -> ArchivePath:
    return _path_class(*key)(Path(key[0]), rel)


_HANDLES: dict[tuple[int, Path], zipfile.ZipFile] = {}


def _handle(archive: Path) -> zipfile.ZipFile:
    """This process's open handle of `archive` (a forked worker opens its own)."""
    key = (os.getpid(), archive)
    if key not in _HANDLES:
        _HANDLES[key] = zipfile.ZipFile(archive)
    return _HANDLES[key]


def zip_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.zip") if p.is_file()) if folder.is_dir() else []


def _wrapper(names: Sequence[str], tops: set[str]) -> str:
    """A single folder around an archive's whole content that is not itself part of the layout (`'X/'`), or ''."""
    firsts = {n.split("/", 1)[0] for n in names if "/" in n}
    loose = [n for n in names if "/" not in n]
    if tops and len(firsts) == 1 and not loose and not firsts & tops:
        return f"{firsts.pop()}/"
    return ""


@lru_cache(maxsize=32)
def _path_class(folder: str, signature: tuple[tuple[str, int, int], ...], rules: Rules,
                tops: tuple[str, ...]) -> type[ArchivePath]:  # fmt: skip
    from diga.data.io import DatasetError

    archives = tuple(Path(folder) / name for name, _, _ in signature)
    tree = ArchiveTree(Path(folder), archives, rules)
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    for index, archive in enumerate(archives):
        try:
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except (OSError, zipfile.BadZipFile) as e:
            raise DatasetError(f"{archive}: not a readable zip archive ({e})") from e
        strip = _wrapper(names, set(tops))
        for member in names:
            rel = member[len(strip) :] if strip and member.startswith(strip) else member
            for pattern, replacement in compiled:
                if pattern.fullmatch(rel):
                    rel = pattern.sub(replacement, rel)
                    break
            tree.add_member(index, member, rel)
    key = (folder, signature, rules, tops)
    return type("ArchivePath", (ArchivePath,), {"tree": tree, "tree_key": key})


def archive_root(folder: Path, rules: Rules = (), tops: Sequence[str] = ()) -> ArchivePath | None:
    """`folder` as an `ArchivePath` over its `*.zip` files, or None when it has none. The index is cached per
    folder, archive sizes and modification times, so every dataset over the same archives shares it."""
    archives = zip_files(folder)
    if not archives:
        return None
    signature = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in archives)
    cls = _path_class(str(folder), signature, tuple(rules), tuple(sorted(set(tops))))
    return cls(folder)


def dataset_root(cls: Any, root: str | Path, split: str, with_labels: bool) -> Path:
    """Where `cls` reads `split` from: `root` itself when its layout is unpacked there (or no archive is), else the
    tree of `root`'s zip archives — also when that tree lacks the layout, so the error names what the archives
    miss."""
    folder = Path(root)
    layout = getattr(cls, "layout", None)
    needed = layout(folder, split, with_labels) if layout is not None else []
    if all(p.exists() for p in needed) or not zip_files(folder):
        return folder
    tops = {p.relative_to(folder).parts[0] for p in needed if p != folder}
    tree = archive_root(folder, getattr(cls, "archive_members", ()), tops)
    return tree if tree is not None else folder
