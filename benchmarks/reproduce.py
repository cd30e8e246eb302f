"""`make reproduce` / `python -m benchmarks.reproduce` — the toy pipeline at reduced size against a committed table.

Runs `experiment=toy stage=pipeline` with shortened stage budgets (about REDUCED below) and compares every stage's
IoU per class with `benchmarks/expected/toy_reduced.json`:

- exact (|Δ| < 1e-6 IoU points, i.e. the same confusion matrices) when this machine's kernel signature equals the
  one the table was measured with — same torch build, ATen vector ISA, oneDNN/MKL builds, CPU ISA flags, thread
  count and kernel-selecting environment variables (`diga.utils.environment.kernel_signature`); those choose the
  floating-point kernels, and the run is deterministic given them;
- within the table's stated tolerance otherwise (measured by re-running under other kernel paths, see
  `tolerance_measured_with` in the table).

On a mismatch it prints every class whose IoU moved, per stage, and exits 1. `--update` re-measures the table on
this machine (keeping its tolerance record); `--variant NAME` runs one of the kernel-path variants (for measuring
the tolerance) and prints its differences without failing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

EXPECTED = Path(__file__).parent / "expected" / "toy_reduced.json"
# toy generator 1: the table in benchmarks/expected was measured on it (generator 2 is the toy's default since)
REDUCED = ["experiment=toy", "toy_spec.version=1", "stage=pipeline", "seed=0", "run_id=reproduce",
           "steps.source_only=100", "steps.translator=60", "steps.warmup=100", "steps.selftrain=60",
           "val_every=100", "ckpt_every=100", "trainer.enable_progress_bar=false"]  # fmt: skip
# other CPU kernel paths this machine can take: what a CPU of the same kind but another generation would run
VARIANTS = {
    "aten_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "one_thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}
# not a kernel path but a setting: is bf16 autocast's change within the kernel-path noise? (a default decision)
SETTINGS = {"bf16": ["trainer.precision=bf16-mixed"]}
EXACT = 1e-6


def run_reduced(work: Path, env_vars: dict[str, str] | None = None,
                extra: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Run the reduced pipeline in a fresh process → (per-class rows, env.json of the run)."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", **(env_vars or {})}
    cmd = [sys.executable, "-m", "diga.train", *REDUCED, *(extra or []), f"paths.root_dir={work}"]
    subprocess.run(cmd, check=True, env=env, cwd=work)
    run = work / "logs" / "train" / "toy" / "pipeline" / "reproduce"
    per_class = json.loads((run / "pipeline_per_class.json").read_text())
    miou = json.loads((run / "pipeline_results.json").read_text())
    return {"miou": miou, "per_class": per_class}, json.loads((run / "env.json").read_text())


def differences(expected: dict[str, Any], got: dict[str, Any]) -> list[tuple[str, str, str, float, float]]:
    """(set, stage, class or 'mIoU', expected, got) for every number that is not equal to EXACT."""
    out = []
    for name, rows in expected["per_class"].items():
        for stage, classes in rows.items():
            for cls, want in classes.items():
                have = got["per_class"].get(name, {}).get(stage, {}).get(cls, float("nan"))
                if not abs(have - want) < EXACT:
                    out.append((name, stage, cls, want, have))
    for stage, sets in expected["miou"].items():
        for name, want in sets.items():
            have = got["miou"].get(stage, {}).get(name, float("nan"))
            if not abs(have - want) < EXACT:
                out.append((name, stage, "mIoU", want, have))
    return out


def largest_miou_delta(diffs: list[tuple[str, str, str, float, float]]) -> float:
    return max((abs(h - w) for _, _, c, w, h in diffs if c == "mIoU"), default=0.0)


def format_differences(diffs: list[tuple[str, str, str, float, float]]) -> str:
    lines = [f"  {name:<12} {stage:<32} {cls:<14} expected {want:7.2f}  got {have:7.2f}  Δ {have - want:+.2f}"
             for name, stage, cls, want, have in diffs]  # fmt: skip
    return "\n".join(lines) or "  none"


def check(expected: dict[str, Any], got: dict[str, Any], signature: str) -> tuple[bool, str]:
    """Whether `got` reproduces `expected` on a machine with kernel `signature`, and a report."""
    known = expected.get("also_exact_on", {})  # other machines whose kernels were measured: exact there too
    if signature != expected["kernel_signature"] and signature in known:
        expected = {**expected, **known[signature], "kernel_signature": signature}
    diffs = differences(expected, got)
    exact = signature == expected["kernel_signature"]
    if exact:
        ok = not diffs
        how = f"same kernel signature {signature}: exact comparison (|Δ| < {EXACT})"
    else:
        tol = expected["tolerance_miou"]
        worst = largest_miou_delta(diffs)
        ok = worst <= tol
        how = (f"kernel signature {signature} ≠ the table's {expected['kernel_signature']}: mIoU within ±{tol} "
               f"(largest |Δ| {worst:.2f}); per-class IoU differences are shown, not judged")  # fmt: skip
    return ok, f"{how}\ndifferences:\n{format_differences(diffs)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="re-measure the expected table on this machine")
    parser.add_argument("--variant", choices=sorted(VARIANTS) + sorted(SETTINGS),
                        help="run under another kernel path (or setting) and report its differences")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="diga-reproduce-"))
    work.mkdir(parents=True, exist_ok=True)
    got, env = run_reduced(work, VARIANTS.get(args.variant or ""), SETTINGS.get(args.variant or ""))
    if args.update:
        old = json.loads(EXPECTED.read_text()) if EXPECTED.is_file() else {}
        measured_with = {
            "cpu": env["cpu"],
            "cpu_isa_flags": env["cpu_isa_flags"],
            "python": env["python"],
            "torch": env["torch"],
            "lock_sha256": env["lock"]["sha256"],
            "git": env["git"]["commit"],
        }
        table = {**got, "kernel_signature": env["kernel_signature"], "measured_with": measured_with,
                 "tolerance_miou": old.get("tolerance_miou", 0.5),
                 "tolerance_measured_with": old.get("tolerance_measured_with", {}),
                 "also_exact_on": old.get("also_exact_on", {})}  # fmt: skip
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {EXPECTED} (kernel signature {env['kernel_signature']})")
        return
    expected = json.loads(EXPECTED.read_text())
    if args.variant:
        diffs = differences(expected, got)
        worst = largest_miou_delta(diffs)
        print(json.dumps({"variant": args.variant, "kernel_signature": env["kernel_signature"],
                          "largest_miou_delta": worst, "miou": got["miou"]}))  # fmt: skip
        print(format_differences(diffs))
        return
    ok, text = check(expected, got, env["kernel_signature"])
    print(text)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
