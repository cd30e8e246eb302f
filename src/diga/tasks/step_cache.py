"""The step cache of `stage=pipeline` (`stage.step_cache`): a step computed once for every run that plans it.

A cached step lives in `<cache>/<name>-<content key>` and is linked into each run directory as `<NN>_<name>`; one
process computes it while the others wait on its lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from diga.tasks.pipeline_plan import Step

log = logging.getLogger(__name__)


def link_into_run(step: Step) -> None:
    """`<run dir>/<NN>_<name>` → the step's directory in the cache (what a reader of the run directory sees).

    The link is relative to the run directory, so it holds whatever the working directory (`stage.step_cache` may
    be a relative path) and when the logs move together. A dangling link (one an older run wrote) is replaced."""
    assert step.link is not None
    step.out.root.mkdir(parents=True, exist_ok=True)
    target = step.out.root.resolve()
    if step.link.is_symlink() and not step.link.exists():
        step.link.unlink()
    if step.link.is_symlink() and step.link.resolve() == target:
        return
    if step.link.exists():
        raise FileExistsError(f"{step.link}: exists and is not a link to the step cache entry {step.out.root}")
    step.link.parent.mkdir(parents=True, exist_ok=True)
    step.link.symlink_to(os.path.relpath(target, step.link.parent.resolve()), target_is_directory=True)


@contextlib.contextmanager
def step_lock(step: Step, poll_s: float = 10.0) -> Iterator[None]:
    """One process computes a cached step; others wait for it (a lock left by a dead process is taken over)."""
    import time

    lock = step.out.root.with_suffix(".lock")
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            if step.out.done.is_file():
                yield
                return
            try:
                owner = int(lock.read_text() or 0)
                os.kill(owner, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # its process is gone
                continue
            except PermissionError:
                pass
            log.info("pipeline: %s is being computed by process %s (%s); waiting", step.name, owner, lock)
            time.sleep(poll_s)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
