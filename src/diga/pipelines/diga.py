"""DiGA: source-only baseline → translator → warm-up → pseudo-labels → centroids → self-training (→ refinement
rounds: pseudo-labels from the latest model, self-training again) → target-supervised upper bound."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diga.pipelines.steps import AddStep


def plan_steps(stage: Mapping[str, Any], add: AddStep) -> None:
    """`stage`: conf/stage/pipeline.yaml's keys (baseline, translator, adaptation, refine_rounds, …)."""
    if stage["baseline"]:
        add("source_only", "source_only", row="source-only")
    translator = [f"stage.module.translator.kind={stage['translator']}"]
    if stage["translator"] == "learned":
        translator.append(f"stage.module.translator.checkpoint={add('translator', 'translator').translator}")
    else:
        translator.append("stage.module.translator.checkpoint=null")
    model = add("warmup", "warmup", translator, row="warm-up", adapted=True).final_model
    if stage.get("adaptation", True):
        predict = [f"stage.init_from={model}"]
        pseudo_labels = add("pseudolabel", "pseudolabel", predict).pseudo_labels
        centroids = add("centroids", "centroids", predict).centroids
        for r in range(int(stage["refine_rounds"]) + 1):
            suffix = "" if r == 0 else f"_r{r + 1}"
            if r > 0:
                predict = [f"stage.init_from={model}"]
                pseudo_labels = add(f"pseudolabel{suffix}", "pseudolabel", predict).pseudo_labels
                if stage["recompute_centroids_each_round"]:
                    centroids = add(f"centroids{suffix}", "centroids", predict).centroids
            wiring = [
                f"stage.init_from={model}",
                f"stage.pseudo_labels={pseudo_labels}",
                f"stage.centroids={centroids}",
            ]
            row = "self-training" if r == 0 else f"refinement {r}"
            model = add(f"selftrain{suffix}", "selftrain", [*translator, *wiring], row=row, adapted=True).final_model
    if stage["oracle"]:
        add("target_supervised", "source_only", oracle=True, row="target-supervised (upper bound)")
