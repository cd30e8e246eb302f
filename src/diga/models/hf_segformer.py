"""Hugging Face SegFormer/MiT checkpoints (`nvidia/mit-b*`, `nvidia/segformer-*`) ↔ diga's MiT + SegFormer head.

The Hub is today's most reliable source of MiT weights. Its files name the encoder as `transformers` 4 did
(`segformer.encoder.block.{stage}.{block}.attention.self.query`, separate key and value projections); diga's
encoder is timm's `pvt_v2` (`stages_{i}.blocks.{j}.attn.q`, one concatenated `kv`). The mapping below is strict in
both directions: every tensor of the source must land somewhere and every tensor of the target must be filled.

One difference is not in the weights: `transformers` builds every LayerNorm with eps 1e-5, while the NVlabs
encoder (and timm, and diga by default) uses 1e-6 in the blocks and after each stage. Logits agree to ~1e-5 only
when the epsilons agree: `layer_norm_eps: 1e-5` on the MiT encoder reproduces `transformers`' numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from diga.models.weights import WeightFileError

# SegFormer's published encoder sizes (the same for mit-bN and segformer-bN-*)
MIT_SIZES: dict[str, dict[str, list[int]]] = {
    "mit_b0": {"depths": [2, 2, 2, 2], "hidden_sizes": [32, 64, 160, 256]},
    "mit_b1": {"depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 320, 512]},
    "mit_b2": {"depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 320, 512]},
    "mit_b3": {"depths": [3, 4, 18, 3], "hidden_sizes": [64, 128, 320, 512]},
    "mit_b4": {"depths": [3, 8, 27, 3], "hidden_sizes": [64, 128, 320, 512]},
    "mit_b5": {"depths": [3, 6, 40, 3], "hidden_sizes": [64, 128, 320, 512]},
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# transformers ≥ 5 renames the Hub's keys when it loads them; a state dict taken from such a model in memory uses
# these names. Normalised back to the Hub's (file) names first, so one table below serves both.
_V5_TO_HUB = [
    (r"stages\.(\d+)\.patch_embeddings\.", r"encoder.patch_embeddings.\1."),
    (r"stages\.(\d+)\.blocks\.", r"encoder.block.\1."),
    (r"stages\.(\d+)\.layer_norm\.", r"encoder.layer_norm.\1."),
    (r"attention\.q_proj\.", "attention.self.query."),
    (r"attention\.k_proj\.", "attention.self.key."),
    (r"attention\.v_proj\.", "attention.self.value."),
    (r"attention\.sequence_reduction\.sequence_reduction\.", "attention.self.sr."),
    (r"attention\.sequence_reduction\.layer_norm\.", "attention.self.layer_norm."),
    (r"attention\.o_proj\.", "attention.output.dense."),
    (r"mlp\.fc1\.", "mlp.dense1."),
    (r"mlp\.fc2\.", "mlp.dense2."),
    (r"layernorm_before\.", "layer_norm_1."),
    (r"layernorm_after\.", "layer_norm_2."),
    (r"decode_head\.linear_projections\.", "decode_head.linear_c."),
]

# Hub encoder names (after `segformer.encoder.`) ↔ timm pvt_v2 features names; `{i}` stage, `{j}` block
_BLOCK = [
    ("layer_norm_1", "norm1"),
    ("attention.self.query", "attn.q"),
    ("attention.self.sr", "attn.sr"),
    ("attention.self.layer_norm", "attn.norm"),
    ("attention.output.dense", "attn.proj"),
    ("layer_norm_2", "norm2"),
    ("mlp.dense1", "mlp.fc1"),
    ("mlp.dwconv.dwconv", "mlp.dwconv"),
    ("mlp.dense2", "mlp.fc2"),
]


def is_hf_segformer(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(re.search(r"(^|\.)encoder\.(block|patch_embeddings)\.", k) for k in sd) or any(
        re.search(r"(^|\.)stages\.\d+\.patch_embeddings\.", k) for k in sd
    )


def to_hub_names(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pattern, repl in _V5_TO_HUB:
            k = re.sub(pattern, repl, k)
        if k.startswith("encoder."):  # a bare SegformerModel state dict
            k = "segformer." + k
        out[k] = v
    return out


def hf_encoder_to_timm(sd: Mapping[str, torch.Tensor], source: str | Path) -> dict[str, torch.Tensor]:
    """The encoder tensors of a Hub SegFormer/MiT file, renamed for diga's MiT encoder (timm features names).

    Classification (`classifier.*`) and decode-head (`decode_head.*`) tensors are not the encoder's and are left
    out; any other tensor that the mapping does not know is an error naming the file."""
    hub = to_hub_names(sd)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in hub.items():
        if k.startswith(("classifier.", "decode_head.")):
            continue
        if not k.startswith("segformer.encoder."):
            unknown.append(k)
            continue
        name = k[len("segformer.encoder.") :]
        if m := re.fullmatch(r"patch_embeddings\.(\d+)\.(proj|layer_norm)\.(\w+)", name):
            i, part, leaf = int(m[1]), "norm" if m[2] == "layer_norm" else "proj", m[3]
            out[f"patch_embed.{part}.{leaf}" if i == 0 else f"stages_{i}.downsample.{part}.{leaf}"] = v
        elif m := re.fullmatch(r"layer_norm\.(\d+)\.(\w+)", name):
            out[f"stages_{m[1]}.norm.{m[2]}"] = v
        elif m := re.fullmatch(r"block\.(\d+)\.(\d+)\.(.+)\.(\w+)", name):
            i, j, inner, leaf = m[1], m[2], m[3], m[4]
            if inner in ("attention.self.key", "attention.self.value"):
                continue  # concatenated below
            mapped = dict(_BLOCK).get(inner)
            if mapped is None:
                unknown.append(k)
                continue
            out[f"stages_{i}.blocks.{j}.{mapped}.{leaf}"] = v
        else:
            unknown.append(k)
    for k in hub:
        if m := re.fullmatch(r"segformer\.encoder\.block\.(\d+)\.(\d+)\.attention\.self\.key\.(\w+)", k):
            value = hub.get(k.replace(".self.key.", ".self.value."))
            if value is None:
                raise WeightFileError(f"{source}: {k} has no matching value projection")
            out[f"stages_{m[1]}.blocks.{m[2]}.attn.kv.{m[3]}"] = torch.cat([hub[k], value], dim=0)
    if unknown:
        raise WeightFileError(f"{source}: {len(unknown)} tensors of this SegFormer file have no place in diga's MiT "
                              f"encoder, e.g. {unknown[:3]}")  # fmt: skip
    return out


def hf_head_to_diga(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`decode_head.*` of a Hub `SegformerForSemanticSegmentation` → diga's SegFormer head names (empty if none)."""
    table = {"linear_fuse.weight": "linear_fuse.0.weight", "classifier.weight": "linear_pred.weight",
             "classifier.bias": "linear_pred.bias"}  # fmt: skip
    out = {}
    for k, v in to_hub_names(sd).items():
        if not k.startswith("decode_head."):
            continue
        name = k[len("decode_head.") :]
        if name.startswith("batch_norm."):
            out["linear_fuse.1." + name[len("batch_norm.") :]] = v
        else:
            out[table.get(name, name)] = v  # linear_c.{i}.proj.* keep their names
    return out


def diga_to_hf(model: Any) -> dict[str, torch.Tensor]:
    """A diga MiT + SegFormer-head segmentor → a Hub-named `SegformerForSemanticSegmentation` state dict."""
    out: dict[str, torch.Tensor] = {}
    inverse_block = {t: h for h, t in _BLOCK}
    for k, v in model.backbone.body.state_dict().items():
        if m := re.fullmatch(r"patch_embed\.(proj|norm)\.(\w+)", k):
            out[f"segformer.encoder.patch_embeddings.0.{'layer_norm' if m[1] == 'norm' else 'proj'}.{m[2]}"] = v
        elif m := re.fullmatch(r"stages_(\d+)\.downsample\.(proj|norm)\.(\w+)", k):
            out[f"segformer.encoder.patch_embeddings.{m[1]}.{'layer_norm' if m[2] == 'norm' else 'proj'}.{m[3]}"] = v
        elif m := re.fullmatch(r"stages_(\d+)\.norm\.(\w+)", k):
            out[f"segformer.encoder.layer_norm.{m[1]}.{m[2]}"] = v
        elif m := re.fullmatch(r"stages_(\d+)\.blocks\.(\d+)\.(.+)\.(\w+)", k):
            prefix = f"segformer.encoder.block.{m[1]}.{m[2]}"
            if m[3] == "attn.kv":
                key, value = v.chunk(2, dim=0)
                out[f"{prefix}.attention.self.key.{m[4]}"] = key.clone()
                out[f"{prefix}.attention.self.value.{m[4]}"] = value.clone()
            else:
                out[f"{prefix}.{inverse_block[m[3]]}.{m[4]}"] = v
        else:
            raise ValueError(f"MiT tensor {k!r} has no Hugging Face name")
    head = {"linear_fuse.0.weight": "linear_fuse.weight", "linear_pred.weight": "classifier.weight",
            "linear_pred.bias": "classifier.bias"}  # fmt: skip
    for k, v in model.head.state_dict().items():
        name = "batch_norm." + k[len("linear_fuse.1.") :] if k.startswith("linear_fuse.1.") else head.get(k, k)
        out[f"decode_head.{name}"] = v
    return {k: v.contiguous() for k, v in out.items()}


def hf_config(model: Any, variant: str, id2label: Mapping[int, str]) -> dict[str, Any]:
    """`config.json` of the exported model (a `SegformerConfig`)."""
    sizes = MIT_SIZES[variant]
    return {
        "architectures": ["SegformerForSemanticSegmentation"],
        "model_type": "segformer",
        "num_channels": 3,
        "num_encoder_blocks": 4,
        "depths": sizes["depths"],
        "hidden_sizes": sizes["hidden_sizes"],
        "num_attention_heads": [1, 2, 5, 8],
        "sr_ratios": [8, 4, 2, 1],
        "patch_sizes": [7, 3, 3, 3],
        "strides": [4, 2, 2, 2],
        "mlp_ratios": [4, 4, 4, 4],
        "hidden_act": "gelu",
        "decoder_hidden_size": int(model.head.feat_dim),
        "classifier_dropout_prob": 0.1,
        "reshape_last_stage": True,
        "semantic_loss_ignore_index": 255,
        "num_labels": len(id2label),
        "id2label": {str(i): name for i, name in id2label.items()},
        "label2id": {name: i for i, name in id2label.items()},
    }


def resolve_weight_source(spec: str | Path) -> Path:
    """A weight file from a file path, a `save_pretrained` folder, or a Hub id found in the local cache (offline)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise WeightFileError(f"{path}: folder has none of {', '.join(WEIGHT_FILES)} (a save_pretrained folder?)")
    text = str(spec)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "/")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE

        try:
            folder = snapshot_download(text, local_files_only=True)
        except Exception as e:
            raise WeightFileError(
                f"{text}: not in the local Hugging Face cache ({HF_HUB_CACHE}); nothing is downloaded at run time: "
                f"fetch it on a machine with internet (`huggingface-cli download {text}`) and copy the cache or the "
                f"folder here ({type(e).__name__})"
            ) from e
        return resolve_weight_source(folder)
    raise WeightFileError(f"{spec}: weight file not found")


def write_hf_folder(model: Any, variant: str, id2label: Mapping[int, str], folder: str | Path) -> Path:
    """`config.json` + `model.safetensors`, loadable with `SegformerForSemanticSegmentation.from_pretrained`."""
    from safetensors.torch import save_file

    from diga.utils.io import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.safetensors.tmp"
    save_file(diga_to_hf(model), str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / "model.safetensors")
    atomic_write_bytes(folder / "config.json", json.dumps(hf_config(model, variant, id2label), indent=2).encode())
    return folder
