"""What a recipe is given and returns: it calls `add` once per step, in order, and wires each step's inputs to the
outputs `add` returned for earlier steps (paths named by `diga.utils.artifacts`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from diga.utils.artifacts import StageOutputs


class AddStep(Protocol):
    def __call__(self, name: str, stage: str, overrides: list[str] | None = None, *, oracle: bool = False,
                 row: str | None = None, adapted: bool = False) -> StageOutputs:  # fmt: skip
        """Plan step `name` running conf/stage/`stage`.yaml with `overrides`; its run directory's outputs.

        oracle: train on the target with its labels (the upper bound). row: its label in the results table (None:
        not a row). adapted: a model the pipeline hands on (the headline mIoU is the last such row's).
        """
        ...


Recipe = Callable[[Mapping[str, Any], AddStep], None]  # (the pipeline's plain `stage` config, add) → None
