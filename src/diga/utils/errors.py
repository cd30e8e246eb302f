"""Finding a user-facing error inside the wrappers that Hydra's instantiate and Lightning put around it."""

from __future__ import annotations

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
