"""Which code and which GPU a result came from, recorded in every result file."""

from __future__ import annotations

import os
import subprocess


def git_sha() -> str | None:
    """AIOS_GIT if set (a machine whose copy of the tree has no or a stale .git), else the short HEAD."""
    if os.environ.get("AIOS_GIT"):
        return os.environ["AIOS_GIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_name() -> str | None:
    """The first GPU's name (nvidia-smi), recorded beside the numbers; None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_info(device: str) -> dict:
    """Provenance of a result: torch, triton, python, the GPU (or CPU), the AIOS commit."""
    import platform

    import torch
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": device}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    # nvidia-smi first: torch.cuda.get_device_name would start CUDA in a process (the suite's parent)
    # that never uses the GPU, holding memory the engines' processes then do not get
    info["gpu"] = (gpu_name() or torch.cuda.get_device_name(0)) if device == "cuda" else \
        f"CPU ({platform.processor() or 'cpu'}, {os.cpu_count()} threads)"
    info["aios_git"] = git_sha()
    return info
