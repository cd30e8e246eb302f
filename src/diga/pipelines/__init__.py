"""The step sequences `stage=pipeline` runs, one module per method (`stage.method`).

A recipe is method knowledge: which stages run in which order and which earlier output each one reads (the keys
the stage's contract declares). The generic part — run directories, content keys, the step cache, resuming,
the report — lives in `diga.tasks`. A new method's pipeline is one module here plus its entry in `RECIPES`.
"""

from __future__ import annotations

from diga.pipelines import daformer, diga
from diga.pipelines.steps import AddStep, Recipe

RECIPES: dict[str, Recipe] = {"diga": diga.plan_steps, "daformer": daformer.plan_steps}


def get_recipe(method: str) -> Recipe:
    """The recipe of `stage.method`, or a ValueError listing the known ones."""
    if method not in RECIPES:
        raise ValueError(f"unknown stage.method {method!r}: one of {', '.join(sorted(RECIPES))}")
    return RECIPES[method]


__all__ = ["RECIPES", "AddStep", "Recipe", "get_recipe"]
