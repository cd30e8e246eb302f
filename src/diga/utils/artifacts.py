"""The artifact contract: the file and folder names every stage writes and the next stage reads.

One place for them, so that exporters, tasks, the pipeline and users' scripts agree. A stage's run directory may
hold any of these (which ones depends on the stage):
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FINAL_MODEL = "final_model.pt"  # segmentation stages: model config + student weights (diga.evaluate, next stage)
TRANSLATOR = "translator.pt"  # translator stage: enc_s + dec_s2t + architecture
CENTROIDS = "centroids.pt"  # centroids stage: C×D class centroids + counts + label set
PSEUDO_LABELS = "pseudo_labels"  # pseudolabel stage: one palettised <image name>.png per target training image
PSEUDO_LABEL_MANIFEST = "manifest.json"  # inside PSEUDO_LABELS: written last, marks the set complete
RESULTS = "results.json"  # evaluation of the handed-on model on every validation set (also results.csv)
METRICS = "metrics.json"  # what the stage's task returned (mIoU, per-set results, …); written by every run
TIMINGS = "timings.json"  # where a stage's wall time went (diga.utils.timing)
DONE = "DONE.json"  # pipeline: a finished sub-stage (its metrics), written atomically
PIPELINE_RESULTS = "pipeline_results"  # pipeline root: .json/.csv (mIoU per stage and set) and .png (bar chart)
PIPELINE_PER_CLASS = "pipeline_per_class"  # pipeline root: .json/.csv/.png IoU per class, stage and validation set
PIPELINE_PROFILE = "pipeline_profile.json"  # pipeline root: wall time, peak memory and phases of every step
PREDICTIONS = "predictions.png"  # pipeline root: the first validation images, one column per stage
CHECKPOINTS = "checkpoints"  # Lightning checkpoints of a training stage; LAST_CHECKPOINT resumes it
LAST_CHECKPOINT = "last.ckpt"


@dataclass(frozen=True)
class StageOutputs:
    """Paths of everything a stage run directory can hold."""

    root: Path

    @property
    def final_model(self) -> Path:
        return self.root / FINAL_MODEL

    @property
    def translator(self) -> Path:
        return self.root / TRANSLATOR

    @property
    def centroids(self) -> Path:
        return self.root / CENTROIDS

    @property
    def pseudo_labels(self) -> Path:
        return self.root / PSEUDO_LABELS

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def timings(self) -> Path:
        return self.root / TIMINGS

    @property
    def done(self) -> Path:
        return self.root / DONE

    @property
    def last_checkpoint(self) -> Path:
        return self.root / CHECKPOINTS / LAST_CHECKPOINT


# what the end-of-run notice points at first, when present
HEADLINE = (f"{PIPELINE_RESULTS}.csv", f"{PIPELINE_PER_CLASS}.csv", PREDICTIONS, "results.csv", FINAL_MODEL,
            TRANSLATOR, CENTROIDS, PSEUDO_LABELS)  # fmt: skip


def results_notice(run_dir: str | Path) -> str:
    """One line for the end of a run: where its outputs are and the main ones by name."""
    root = Path(run_dir)
    present = [name for name in HEADLINE if (root / name).exists()]
    return f"outputs in {root}" + (f": {', '.join(present)}" if present else "")
