"""Finding a user-facing error inside the wrappers that Hydra's instantiate and Lightning put around it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


def find_cause(error: BaseException, types: tuple[type[E], ...]) -> E | None:
    """The first exception of `types` in `error`'s chain of causes (itself included), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def exit_on_user_error(types: tuple[type[BaseException], ...], code: int = 2) -> Iterator[None]:
    """A command-line entry point's body: an error of `types` anywhere in the chain becomes one `diga: …` line on
    stderr and exit `code` (the message names the file or key); anything else is a bug and keeps its traceback."""
    try:
        yield
    except Exception as e:
        if (cause := find_cause(e, types)) is None:
            raise
        print(f"diga: {cause}", file=sys.stderr)
        raise SystemExit(code) from None
