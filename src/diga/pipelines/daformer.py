"""DAFormer / MIC as a baseline method of the same harness: one self-training stage between the source-only row
and the upper bound (`stage.method=daformer`; MIC is its masked-consistency option)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diga.pipelines.steps import AddStep


def plan_steps(stage: Mapping[str, Any], add: AddStep) -> None:
    if stage["baseline"]:
        add("source_only", "source_only", row="source-only")
    add("daformer", "daformer", row="DAFormer-style self-training", adapted=True)
    if stage["oracle"]:
        add("target_supervised", "source_only", oracle=True, row="target-supervised (upper bound)")
