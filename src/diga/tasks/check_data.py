"""`python -m diga.check_data experiment=…`: check every dataset split an experiment reads, before training.

Source training set (with labels), target training set (images; labels too when the experiment trains on them)
and every validation set, as the composed config names them. The report (`data_check.json`) holds each split's
fingerprint and every problem; the exit status is 1 when a split has errors (a count that differs from the
official release is reported, not an error: subsets are legitimate).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from diga.data.check import SplitReport, check_split
from diga.data.datamodule import DomainAdaptationDataModule, dataset_config
from diga.utils.hydra import to_plain
from diga.utils.io import atomic_write_bytes
from diga.utils.progress import progress

log = logging.getLogger(__name__)
REPORT = "data_check.json"


def planned_splits(cfg: DictConfig) -> list[tuple[str, dict[str, Any], str, bool]]:
    """(role, dataset config, split key, with labels) for every split the experiment reads."""
    dm = to_plain(cfg.datamodule)
    out = []
    if dm.get("source"):
        out.append(("source", dm["source"], "train", True))
    if dataset_config(dm.get("target")):  # whatever the stage: the pipeline's later stages read it
        labels = bool(dm.get("target_as_source") or dm.get("target_diagnostic_labels"))
        out.append(("target", dm["target"], "train", labels))
    out += [(f"val.{name}", val, "val", True) for name, val in (dm.get("val") or {}).items() if val]
    return out


def _min_side(cfg: DictConfig, val: dict[str, Any]) -> int:
    """Evaluation images at native size must be large enough at the smallest inference scale."""
    if (val.get("loader") or {}).get("eval_resize"):
        return 1
    from diga.config.shape_checks import inference_min_side, model_config

    model = model_config(cfg)
    if model is None:
        return 1
    from diga.models.factory import min_input_side

    return inference_min_side(min_input_side(model), to_plain(cfg.get("inference")))[0]


def run_check_data(cfg: DictConfig) -> list[SplitReport]:
    check = to_plain(cfg.get("check")) or {}
    only = check.get("only")
    planned = planned_splits(cfg)
    if only:  # e.g. [target]: a folder of one's own images, before the source datasets are downloaded
        roles = [p[0] for p in planned]
        unknown = [r for r in only if r not in roles]
        if unknown:
            raise ValueError(f"check.only names {unknown}; this experiment reads {roles}")
        planned = [p for p in planned if p[0] in only]
    reports = []
    for role, ds_cfg, split_key, with_labels in planned:
        dataset = DomainAdaptationDataModule.build_eval_dataset(ds_cfg, split_key=split_key, transform=None,
                                                                with_labels=with_labels)  # fmt: skip
        min_side = _min_side(cfg, ds_cfg) if role.startswith("val.") else 1
        report = check_split(dataset, decode=bool(check.get("decode", True)), min_side=min_side,
                             workers=int(check.get("workers", 4)), progress=progress)  # fmt: skip
        print(f"[{role}] {report.summary()}")
        reports.append(report)
    out = Path(str(cfg.paths.output_dir)) / REPORT
    atomic_write_bytes(out, json.dumps({"splits": [r.as_dict() for r in reports]}, indent=1).encode())
    bad = [r for r in reports if not r.ok]
    print(f"{len(reports) - len(bad)}/{len(reports)} splits without errors; report: {out}")
    return reports
