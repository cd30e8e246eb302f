"""The stage contract: what every training stage's LightningModule declares, so that the layers above ask it
instead of knowing the stage.

Pre-flight (`diga.config.preflight`) reads `declared_inputs` and `validates` from the class, before anything is
built; `diga.tasks.fit` asks a built module for its memory estimate, the options that lower it, its validation
sets and what it exports. A new stage is a module that implements this plus a YAML under conf/stage/ — nothing in
`diga.tasks` or `diga.config` changes (docs/architecture.md walks through one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from diga.utils.memory import MemoryEstimate

InputGroup = Literal["weights", "earlier output"]


@dataclass(frozen=True)
class StageInput:
    """One file (or folder) a stage reads, as its config sets it.

    `path` is None when the config leaves the input out (an optional input, or one switched off): nothing to check.
    `set_with` is the key a user sets to point diga at it; `expected` says what the file is.
    """

    group: InputGroup
    what: str
    path: str | None
    set_with: str
    expected: str = ""


@runtime_checkable
class TrainingStage(Protocol):
    """Implemented by every `stage.module` (`SegmentationModule` and its subclasses, `TranslatorModule`)."""

    validates: ClassVar[bool]  # reads the datamodule's validation sets (the translator does not)
    produces: ClassVar[tuple[str, ...]]  # the artifact names `export` writes (diga.utils.artifacts)
    val_names: list[str]  # the validation sets, in loader order (empty: none)
    result_names: list[str]  # the sets results are reported for: pooled sets (report_pooled) first, then val_names
    last_val_step: int | None  # the global step of the last validation (None before the first)

    @classmethod
    def declared_inputs(cls, stage: Mapping[str, Any]) -> list[StageInput]:
        """The files this stage reads besides its datasets, given the stage's plain config (`cfg.stage`, with
        `module` its constructor)."""
        ...

    def estimate_memory(self, crop: tuple[int, int], source_images: int, target_images: int,
                        precision: str | None = None) -> MemoryEstimate:  # fmt: skip
        """Bytes one training step of this crop, batch and precision needs (diga.utils.memory)."""
        ...

    def memory_fallbacks(self, source_images: int, target_images: int) -> list[tuple[str, ...]]:
        """Override lists that lower the training step's memory, in the order to try them (same maths first)."""
        ...

    # stages that validate (`validates`) also say what validation needs, beside the weights they hold
    def weight_bytes(self) -> int:
        """Weights, gradients and optimiser state, and the frozen networks: what stays allocated during validation."""
        ...

    def estimate_inference_memory(self, image: Sequence[int], images: int, precision: str | None = None) -> int:
        """Bytes one validation batch of `images` images of `image` (H, W) needs beside the weights."""
        ...

    @property
    def validation_fallback(self) -> tuple[str, ...]:
        """Overrides that lower validation's memory with the same predictions (batched windows one at a time), or
        () when there are none."""
        ...

    def export(self, out_dir: str | Path) -> Path:
        """Write what the next stage or `diga.evaluate` reads; the path of the main file."""
        ...


def file_input(group: InputGroup, what: str, path: Any, set_with: str, expected: str = "") -> list[StageInput]:
    """`[StageInput]` when the config sets `path`, else `[]` (an input left out is not checked)."""
    return [StageInput(group, what, str(path), set_with, expected)] if path else []


def check_stage_class(cls: type) -> None:
    """Raise a TypeError naming what a `stage.module` class lacks of the contract (at build time, not mid-run)."""
    needed = ("validates", "produces", "declared_inputs", "estimate_memory", "memory_fallbacks", "export")
    if getattr(cls, "validates", False):
        needed += ("weight_bytes", "estimate_inference_memory", "validation_fallback")
    missing = [name for name in needed if not hasattr(cls, name)]
    if missing:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} is a stage.module but lacks {', '.join(missing)} of "
                        "the stage contract (diga.modules.contract.TrainingStage)")  # fmt: skip
