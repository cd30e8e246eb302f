"""What a run ran with: interpreter, torch build, devices, CPU kernel path, packages, lock, git state, config.

Written as `env.json` beside every run's results (and printed by `python -m diga.env`), so that "why do my numbers
differ from yours?" is answered by diffing two files. `kernel_signature` is the part that decides whether two
CPU runs can agree to the last digit: the same torch build, ATen's vectorisation level, the oneDNN/MKL builds and
the thread count choose the same floating-point kernels; anything else (load, RAM, the CPU's brand) does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ENV = "env.json"
# keys that name where a run lives or how it was started, not what it computes
NON_SEMANTIC_KEYS = ("paths", "run_id", "ckpt_path", "overwrite", "hydra", "pipeline_step")


def repository_root() -> Path | None:
    """The checkout this package runs from (editable install), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "diga").is_dir() else None


def lock_file() -> Path | None:
    """The lock of this machine's architecture, when running from a checkout."""
    root = repository_root()
    if root is None:
        return None
    arch = "aarch64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    path = root / "requirements" / f"lock-{arch}.txt"
    return path if path.is_file() else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed_packages() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out[name.lower().replace("_", "-")] = dist.version
    return dict(sorted(out.items()))


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.split(";")[0].strip()
    return pins


def lock_status(packages: dict[str, str]) -> dict[str, Any]:
    """The lock's hash and every locked package whose installed version differs from it."""
    path = lock_file()
    if path is None:
        return {"file": None, "sha256": None, "differs": None}
    pins = read_lock(path)
    differs = {n: {"locked": v, "installed": packages.get(n)} for n, v in pins.items() if packages.get(n) != v}
    return {"file": path.name, "sha256": _sha256(path.read_bytes()), "differs": differs}


def git_state() -> dict[str, Any]:
    root = repository_root()
    if root is None or not (root / ".git").exists():
        return {"commit": None, "dirty": None}

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20).stdout

    try:
        commit = git("rev-parse", "HEAD").strip() or None
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(changed), "changed_files": changed[:50]}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")  # fmt: skip


def cpu_isa_flags() -> list[str]:
    """The CPU's vector extensions that oneDNN and MKL dispatch on (a different set can pick other kernels)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


def torch_build() -> dict[str, Any]:
    import torch

    config = torch.__config__.show()

    def version_of(prefix: str) -> str | None:
        line = next((ln.strip() for ln in config.splitlines() if ln.strip().startswith(prefix)), None)
        return line.split(prefix, 1)[1].strip(" :") if line else None

    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": gpus,
        "gpu_driver": _nvidia_driver() if cuda else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the ISA ATen's CPU kernels dispatch to
        "onednn": version_of("- Intel(R) MKL-DNN") or version_of("- oneDNN"),
        "mkl": version_of("- Intel(R) oneAPI Math Kernel Library") or version_of("- Intel(R) Math Kernel Library"),
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


# environment variables that change which kernels run or how many threads they use
KERNEL_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                    "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "CUBLAS_WORKSPACE_CONFIG")  # fmt: skip


def kernel_signature(env: dict[str, Any]) -> str:
    """A short hash of what selects the floating-point kernels of a CPU run (equal ⇒ bit-identical results)."""
    t = env["torch"]
    parts = {k: t[k] for k in ("torch", "cpu_capability", "onednn", "mkl", "threads")}
    parts["packages"] = {n: env["packages"].get(n) for n in ("numpy", "opencv-python-headless", "pillow", "kornia",
                                                               "albumentations", "timm")}  # fmt: skip
    parts["variables"] = env["variables"]
    parts["cpu_isa_flags"] = env["cpu_isa_flags"]
    return _sha256(json.dumps(parts, sort_keys=True).encode())[:16]


def config_hashes(cfg: Any) -> dict[str, str]:
    """sha256 of the whole composed config, and of what it computes (without paths, run id and resume keys)."""
    from omegaconf import OmegaConf

    def dump(node: Any) -> bytes:
        try:
            return OmegaConf.to_yaml(node, resolve=True, sort_keys=True).encode()
        except Exception:  # an interpolation that only resolves inside a running Hydra app
            return OmegaConf.to_yaml(node, resolve=False, sort_keys=True).encode()

    portable = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in NON_SEMANTIC_KEYS])
    return {"config_sha256": _sha256(dump(cfg)), "config_sha256_portable": _sha256(dump(portable))}


def collect(cfg: Any | None = None) -> dict[str, Any]:
    packages = installed_packages()
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_isa_flags": cpu_isa_flags(),
        "torch": torch_build(),
        "variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
        "diga": packages.get("diga"),
        "git": git_state(),
        "lock": lock_status(packages),
        "packages": packages,
    }
    env["kernel_signature"] = kernel_signature(env)
    if cfg is not None:
        env.update(config_hashes(cfg))
    return env


def reference(env: dict[str, Any]) -> dict[str, Any]:
    """The few fields a results file carries to point at its `env.json` (stable across run directories)."""
    return {"env": ENV, "git_commit": env["git"]["commit"], "git_dirty": env["git"]["dirty"],
            "lock_sha256": env["lock"]["sha256"], "kernel_signature": env["kernel_signature"],
            "config_sha256_portable": env.get("config_sha256_portable")}  # fmt: skip


def write(run_dir: str | Path, cfg: Any | None = None) -> dict[str, Any]:
    """`<run_dir>/env.json` (atomic); returns what was written."""
    from diga.utils.io import atomic_write_bytes

    env = collect(cfg)
    atomic_write_bytes(Path(run_dir) / ENV, json.dumps(env, indent=1).encode())
    return env


def read_reference(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / ENV
    return reference(json.loads(path.read_text())) if path.is_file() else None


def summary_line(ref: dict[str, Any] | None) -> str:
    if not ref:
        return "environment: not recorded"
    commit = (ref["git_commit"] or "no git")[:10] + (" (dirty tree)" if ref["git_dirty"] else "")
    lock = (ref["lock_sha256"] or "none")[:10]
    return f"environment: {ref['env']} · commit {commit} · lock {lock} · kernels {ref['kernel_signature']}"
