"""Where a figure was measured: hardware, drivers, versions, code revision."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path

from specbench import __version__


def package_version(name: str) -> str | None:
    """Installed version of a distribution, without importing it (importing jax costs seconds)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def git_commit() -> str | None:
    """The specbench source tree's commit (with '+dirty' if it has local changes), if it is a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "jax": package_version("jax"),
        "jaxlib": package_version("jaxlib"),
        "transformers": package_version("transformers"),
        "specbench_version": __version__,
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
    }


def torch_environment(device) -> dict[str, object]:
    """Hardware as torch sees it for `device` (a torch.device), plus software versions."""
    import os

    import torch

    info: dict[str, object] = {"framework": "torch", "device": str(device)}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            device_name=properties.name,
            device_count=torch.cuda.device_count(),
            device_memory_gb=round(properties.total_memory / 2**30, 1),
            driver=f"ROCm/HIP {torch.version.hip}" if torch.version.hip else f"CUDA {torch.version.cuda}",
        )
    else:
        info.update(device_name=cpu_name(), device_count=1, driver=None, cpu_threads=torch.get_num_threads(),
                    cpu_count=os.cpu_count())
    info.update(software())
    return info
