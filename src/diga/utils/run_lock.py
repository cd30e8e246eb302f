"""One run per run directory at a time: an advisory lock held for the whole run.

Two runs started with the same `run_id` would otherwise train into the same folder and leave one's results next to
the other's config. The lock is `flock` on `<run dir>/.diga.lock`: the kernel releases it when its process ends,
however it ends (a SIGKILL leaves no stale lock). The file names its holder, so the refusal can say who it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

RUN_LOCK = ".diga.lock"


class RunFolderBusy(RuntimeError):
    """Another process holds the run directory."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "a run that is still starting"
    return f"process {info.get('pid')} on {info.get('host')}, started {info.get('started')}: {info.get('command', '')}"


@contextlib.contextmanager
def run_folder_lock(folder: str | Path, command: str = "") -> Iterator[None]:
    """Hold `folder`'s lock while the body runs; `RunFolderBusy` naming the holder if another process has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderBusy(f"{folder} is in use by another diga run ({_holder(path)}); wait for it to end, or start "
                            f"this one with another run_id=… ({path})") from None  # fmt: skip
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.ftruncate(fd, 0)  # an empty lock file: nobody holds the folder
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
