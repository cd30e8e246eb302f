"""`python -m diga.check_data experiment=…` — read every file of every dataset split the experiment uses."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra
from omegaconf import DictConfig

from diga.config import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="check_data")
def main(cfg: DictConfig) -> None:
    from diga.data.io import DatasetError
    from diga.tasks.check_data import run_check_data
    from diga.utils.errors import find_cause

    try:
        reports = run_check_data(cfg)
    except Exception as e:  # a split that cannot even be listed (missing folder), raised inside instantiate
        if (cause := find_cause(e, (DatasetError,))) is None:
            raise
        print(f"diga: {cause}", file=sys.stderr)
        raise SystemExit(2) from None
    if not all(r.ok for r in reports):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
