"""`python -m diga.check_data experiment=…` — read every file of every dataset split the experiment uses."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra
from omegaconf import DictConfig

from diga.config import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="check_data")
def main(cfg: DictConfig) -> None:
    from diga.data.io import DatasetError
    from diga.tasks.check_data import run_check_data
    from diga.utils.errors import exit_on_user_error

    with exit_on_user_error((DatasetError,)):  # a split that cannot even be listed (missing folder), via instantiate
        reports = run_check_data(cfg)
    if not all(r.ok for r in reports):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
