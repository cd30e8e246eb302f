"""The centroid stage's two averaging modes on a trained toy model: the authors' running mean (several passes,
per-class sample cap) and the exact mean agree where no class reaches the cap."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diga.tasks import run_task
from tests.helpers import compose_cfg, tiny_toy_overrides


def test_reference_averaging_matches_the_exact_mean_below_the_cap(tmp_path: Path, toy_root: Path,
                                                                  trained_toy_run: Path) -> None:  # fmt: skip
    out = {}
    for mode in ("exact", "reference"):
        base = [*tiny_toy_overrides(tmp_path / mode, toy_root.parent), "stage=centroids",
                f"stage.init_from={trained_toy_run / 'final_model.pt'}", f"stage.averaging={mode}",
                "stage.passes=3"]  # fmt: skip
        run_task(compose_cfg(base))
        out[mode] = torch.load(tmp_path / mode / "run" / "centroids.pt", weights_only=True)
    seen = out["exact"]["counts"] > 0
    assert seen.any()
    assert torch.equal(seen, out["reference"]["counts"] > 0)
    torch.testing.assert_close(out["reference"]["centroids"][seen], out["exact"]["centroids"][seen],
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="averaging"):
        run_task(compose_cfg([*base[:-2], "stage.averaging=median", "overwrite=true"]))
