"""Class centroids in feature space: per-image class means, dataset initialisation and online EMA updates."""

from diga.centroids.ops import (
    class_mean_vectors,
    nearest_centroid_labels,
    nearest_centroid_probs,
    ordered_class_vectors,
    sequential_ema,
)
from diga.centroids.store import CentroidAccumulator, load_centroids, reference_running_mean, save_centroids

__all__ = ["CentroidAccumulator", "class_mean_vectors", "load_centroids", "nearest_centroid_labels",
           "nearest_centroid_probs", "ordered_class_vectors", "reference_running_mean", "save_centroids",
           "sequential_ema"]  # fmt: skip
