"""Rebuilding a segmentor from one of diga's own files (its config travels inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diga.models.segmentor import Segmentor
from diga.models.weights import WeightFileError, load_into


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_segmentor(path: str | Path) -> tuple[Segmentor, str]:
    """Rebuild a segmentor from a diga checkpoint (its config travels inside) → (model in eval mode, label set)."""
    from hydra.utils import instantiate

    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: checkpoint not found")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightFileError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict) and "model_cfg" in obj:  # exported final_model.pt
        model_cfg, label_set, sd = obj["model_cfg"], obj["label_set"], obj["state_dict"]
    elif (
        isinstance(obj, dict)
        and isinstance(obj.get("hyper_parameters"), dict)
        and ("model" in obj["hyper_parameters"] or "model_cfg" in obj["hyper_parameters"])
    ):  # a Lightning checkpoint of a segmentation stage (`model_cfg`: older diga versions)
        hp = obj["hyper_parameters"]
        model_cfg, label_set = dict(hp.get("model") or hp["model_cfg"]), hp["label_set"]
        sd = {k[len("model.") :]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
    else:
        raise WeightFileError(f"{path}: not a diga checkpoint (no model config inside)")
    model_cfg = {**model_cfg, "pretrained": None, "weights": None}
    model: Segmentor = instantiate(model_cfg, _convert_="all")
    load_into(model, sd, path, "segmentor")
    return model.eval(), label_set
