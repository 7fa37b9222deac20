"""Peak memory of one side of a benchmark, measured in a fresh subprocess so neither side's leftovers
(allocator caches, pandas internals) count against the other.

    python -m benchmarks._memory CASE PROVIDER CROWD.npz   ->   one JSON line on stdout

The child loads the crowd, builds the DataFrame, imports the provider's library and makes the estimator;
then it resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` ← 5; on kernels without it the
``ru_maxrss`` high-water mark is used instead), runs ``fit_predict`` once and reports
peak RSS − RSS before the fit: the memory the call itself needed.
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

MB = 1024 * 1024


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(case: str, provider: str, crowd_npz: str) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from benchmarks._crowd import fit_predict, make_estimator

    with np.load(crowd_npz) as z:
        df = pd.DataFrame({"task": z["task"], "worker": z["worker"], "label": z["label"]})
        truth = z["truth"]
    estimator = make_estimator(case, provider)
    gc.collect()
    reset = _reset_peak()
    before_kb = _status_kb("VmRSS")
    if before_kb is None:  # no /proc: the best we have is the process's high-water mark so far
        before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fit_predict(estimator, case, df, truth)
    peak_kb = (_status_kb("VmHWM") if reset else None) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_mb": peak_kb / 1024, "rss_before_mb": before_kb / 1024,
            "peak_increase_mb": max(peak_kb - before_kb, 0) / 1024,
            "method": "VmHWM after clear_refs" if reset else "ru_maxrss"}


def measure_in_subprocess(case: str, provider: str, crowd_npz: Path, timeout_s: float = 1800) -> dict[str, Any]:
    """Runs :func:`measure` in a fresh interpreter; raises RuntimeError with its stderr if it fails."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "benchmarks._memory", case, provider, str(crowd_npz)],
                          cwd=root, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"memory subprocess for {case}/{provider} failed (rc {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m benchmarks._memory CASE PROVIDER CROWD.npz")
    print(json.dumps(measure(*sys.argv[1:])))
