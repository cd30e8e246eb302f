"""`python -m diga.convert experiment=gta2cs_mic_hrda released=PATH out=final_model.pt` — an authors' DAFormer, HRDA or
MIC checkpoint as a diga model file, which `diga.evaluate` and `diga.predict` then run.

The authors' files carry weights but no architecture: the model config comes from the composed experiment (any
override of `python -m diga.train` works, e.g. `model.hrda=null`). `which=teacher` takes the EMA teacher instead of
the student (the authors report the student). The printed evaluate command uses the authors' test protocol.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

OWN_KEYS = ("released=", "out=", "which=")


def convert(released: str | Path, out: str | Path, overrides: list[str], which: str = "student") -> Path:
    """Write `out` (a diga final_model.pt) with the model of `overrides`' config and the weights of `released`."""
    from hydra.utils import instantiate

    from diga.config import compose_config
    from diga.models.released import load_released
    from diga.utils.atomic_checkpoints import atomic_torch_save
    from diga.utils.hydra import to_plain

    cfg = compose_config([*overrides, "model.pretrained=null", "model.weights=null"])
    model_cfg = to_plain(cfg.model)
    model = instantiate(model_cfg, _convert_="all")
    load_released(model, released, which)
    atomic_torch_save({"model_cfg": model_cfg, "label_set": str(cfg.label_set), "state_dict": model.state_dict()},
                      Path(out))  # fmt: skip
    return Path(out)


def main(argv: list[str]) -> int:
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith(OWN_KEYS)}
    overrides = [a for a in argv if not a.startswith(OWN_KEYS)]
    if "released" not in own or "out" not in own or not any(a.startswith("experiment=") for a in overrides):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    from diga.models.weights import WeightFileError

    try:
        path = convert(own["released"], own["out"], overrides, own.get("which", "student"))
    except WeightFileError as e:
        print(f"diga: {e}", file=sys.stderr)
        return 2
    import torch

    hrda = bool(torch.load(path, map_location="cpu", weights_only=True)["model_cfg"].get("hrda"))
    protocol = "inference=hrda" if hrda else "inference=daformer"
    print(f"diga: wrote {path}; evaluate with the authors' protocol: python -m diga.evaluate ckpt={path} {protocol}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
