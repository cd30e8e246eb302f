"""Random-init weight files in the layouts diga loads, for the rehearsal and the benchmarks (no downloads).

The fake dataset trees beside them come from `diga.data.fake_trees.write_street_trees`.
"""

from __future__ import annotations

from pathlib import Path

import torch


def write_weights(folder: Path) -> dict[str, Path]:
    """Random-init weight files in layouts diga reads: MiT-B0 (timm pvt_v2 layout), ResNet-18 (timm), VGG-19
    (torchvision `vgg19-dcbb9e9d.pth`). They exercise the loading code, not ImageNet features."""
    import timm
    from torchvision.models import vgg19

    folder.mkdir(parents=True, exist_ok=True)
    files = {"mit_b0": folder / "mit_b0.pth", "resnet18": folder / "resnet18.pth",
             "vgg19": folder / "vgg19-dcbb9e9d.pth"}  # fmt: skip
    torch.manual_seed(0)
    if not files["mit_b0"].is_file():
        torch.save(timm.create_model("pvt_v2_b0", mlp_ratios=(4, 4, 4, 4)).state_dict(), files["mit_b0"])
    if not files["resnet18"].is_file():
        torch.save(timm.create_model("resnet18").state_dict(), files["resnet18"])
    if not files["vgg19"].is_file():
        torch.save(vgg19(weights=None).state_dict(), files["vgg19"])
    return files
