"""`python -m diga.env` — the environment a run here would record in its env.json, for a bug report.

`--json` prints the whole record; without it, a summary with every locked package whose installed version differs.
"""

from __future__ import annotations

import argparse
import json

from diga.utils import environment


def format_summary(env: dict) -> str:
    t, git, lock = env["torch"], env["git"], env["lock"]
    lines = [
        f"diga {env['diga']} · Python {env['python']} ({env['implementation']}) · {env['platform']}",
        f"torch {t['torch']} · CUDA {t['cuda']} · cuDNN {t['cudnn']} · GPUs {', '.join(t['gpus']) or 'none'}"
        + (f" (driver {t['gpu_driver']})" if t["gpu_driver"] else ""),
        f"CPU {env['cpu']} × {env['cpu_count']} · ISA {' '.join(env['cpu_isa_flags']) or '?'} · ATen kernels "
        f"{t['cpu_capability']} · oneDNN {t['onednn']} · torch threads {t['threads']}",
        f"kernel-path variables: {env['variables'] or 'none set'} · kernel signature {env['kernel_signature']}",
        f"git {git['commit'] or 'not a checkout'}" + (" (uncommitted changes)" if git["dirty"] else ""),
    ]
    if lock["file"] is None:
        lines.append("lock: not found (an installed wheel, or no requirements/ folder)")
    elif lock["differs"]:
        diffs = ", ".join(f"{n} {d['installed'] or 'missing'} (locked {d['locked']})"
                          for n, d in lock["differs"].items())  # fmt: skip
        lines.append(f"lock {lock['file']} {lock['sha256'][:12]}: {len(lock['differs'])} package(s) differ: {diffs}")
    else:
        lines.append(f"lock {lock['file']} {lock['sha256'][:12]}: every locked package installed at its version")
    lines.append(f"{len(env['packages'])} packages installed (--json lists them)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="the whole record, as written to env.json")
    args = parser.parse_args(argv)
    env = environment.collect()
    print(json.dumps(env, indent=1) if args.json else format_summary(env))


if __name__ == "__main__":
    main()
