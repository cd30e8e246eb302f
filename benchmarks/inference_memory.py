"""`python -m benchmarks.inference_memory` — diga's validation memory estimate against one measured validation batch.

For each case (an experiment's model and inference, a validation image size, batched windows or one at a time),
in a fresh process: build the stage module, take the pre-flight's estimate of one validation batch
(`estimate_inference_memory`: peak live tensors of two shrunk probes, extrapolated), then run the real inference on
one random image of that size and measure how far the process's resident peak rose (`ru_maxrss`). The CPU
counterpart of the GPU's `max_memory_allocated`; prints one line per case and writes
benchmarks/results/inference-memory-<host>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

GB = 1024**3
# (experiment, stage, image (H, W), extra overrides): HRDA's batched 1024×1024 windows on a Cityscapes image, the
# same one window at a time, and DiGA's two-scale whole-image protocol; MiT-B0 keeps each case to minutes on a CPU
CASES = {
    "mic_hrda_batched": ("gta2cs_mic_hrda", "daformer", (1024, 2048), []),
    "mic_hrda_one_window": ("gta2cs_mic_hrda", "daformer", (1024, 2048), ["inference.batched=false"]),
    "diga_two_scale": ("gta2cs", "source_only", (1024, 2048), []),
}
SMALL = ["model.backbone.name=mit_b0", "model.pretrained=null", "trainer=cpu"]


def measure(experiment: str, stage: str, image: tuple[int, int], extra: list[str]) -> dict[str, Any]:
    import torch

    from diga.config import compose_config
    from diga.evaluation.inference import predict_logits
    from diga.tasks.fit import build_module
    from diga.utils.memory import current_rss_bytes, peak_rss_bytes

    cfg = compose_config([f"experiment={experiment}", f"stage={stage}", *SMALL, *extra])
    module = build_module(cfg)
    t = time.perf_counter()
    estimate = module.estimate_inference_memory(image, 1, None)
    probe_s = time.perf_counter() - t
    x = torch.rand(1, 3, *image)
    module.model.eval()
    base = current_rss_bytes() or 0
    t = time.perf_counter()
    predict_logits(module.model, x, module.inference, module.model.num_classes)
    return {"estimate_gb": estimate / GB, "measured_gb": (peak_rss_bytes() - base + x.numel() * 4) / GB,
            "probe_s": probe_s, "inference_s": time.perf_counter() - t}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    from benchmarks.isolate import isolated

    out = Path(__file__).parent / "results" / f"inference-memory-{platform.node()}-{time.strftime('%Y%m%d-%H%M')}.json"
    rows = []
    for name in args.cases.split(","):
        experiment, stage, image, extra = CASES[name]
        r = {"case": name, "experiment": experiment, "image": list(image), "extra": extra,
             **isolated(measure, experiment, stage, image, extra)}  # fmt: skip
        rows.append(r)
        print(f"{name:22s} estimate {r['estimate_gb']:5.2f} GB, measured {r['measured_gb']:5.2f} GB "
              f"(ratio {r['measured_gb'] / r['estimate_gb']:.2f}); probe {r['probe_s']:.0f} s, inference "
              f"{r['inference_s']:.0f} s", flush=True)  # fmt: skip
        out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
