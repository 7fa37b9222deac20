"""Where a benchmark ran: device, CPU model, threads, library versions, commit and date."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("numpy", "pandas", "torch", "crowd-kit", "luab_fast", "pytest", "pytest-benchmark")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first CUDA device's name, or None (no torch, no GPU, or a broken driver)."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


def device(gpu: str | None = None) -> str:
    """``cuda:<name>`` where a GPU exists, else ``cpu:<model>``."""
    gpu = gpu or gpu_name()
    return f"cuda:{gpu}" if gpu else f"cpu:{cpu_model()}"


def device_slug(dev: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", dev.lower()).strip("-")[:60]


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None  # not installed
    return out


def threads() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                            "loadavg_1_5_15min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if hasattr(os, "sched_getaffinity"):
        info["affinity"] = len(os.sched_getaffinity(0))
    try:
        from luab_fast._ext import _C

        info["luab_fast_omp_threads"] = _C.omp_max_threads() if _C is not None else None
    except Exception:
        info["luab_fast_omp_threads"] = None
    return info


def git() -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except Exception:
            return None

    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": run("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def now_utc() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def environment() -> dict[str, Any]:
    gpu = gpu_name()
    return {"device": device(gpu), "cpu_model": cpu_model(), "gpu": gpu, "threads": threads(),
            "versions": versions(), "platform": platform.platform(), "git": git()}
