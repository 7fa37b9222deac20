"""Argument checks shared by the estimators and the CLI: one wording, one thread cap, one memory estimate.

bool is refused wherever a number goes (``True`` is an int to Python, never what a caller means by 1), and
what is not a number is named by the argument rather than left to numpy's "could not convert string to float".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import is_integer, is_number, physical_memory  # check_fits reads the last through here

#: the most OpenMP threads an aggregation may ask for; the compiled engine refuses more too (and crashed
#: trying to start 100,000 before it did): more than this is a typo, not a machine
MAX_THREADS = 1024
#: the compiled engine's cap on classes (csrc/aggregate/crowd.cpp)
MAX_CLASSES = 65536


def integer(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in [lo, hi], else a ValueError naming ``name``."""
    if not is_integer(value) or value < lo or (hi is not None and value > hi):
        if hi is not None:
            what = f"an integer in {lo}..{hi}"
        else:
            what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def n_threads(value: Any) -> int:
    """``n_threads`` for the engine: None (all cores) is 0, else 1..MAX_THREADS."""
    if value is None:
        return 0
    if not is_integer(value) or not 1 <= value <= MAX_THREADS:
        raise ValueError(f"n_threads must be a positive integer up to {MAX_THREADS}, or None for all cores; "
                         f"got {value!r}")
    return int(value)


def number(value: Any, name: str, finite: bool = True) -> float:
    """``value`` as a float >= 0 (and finite unless ``finite`` is False), else a ValueError naming ``name``."""
    if not is_number(value) or math.isnan(value) or value < 0 or (finite and math.isinf(value)):
        kind = "a finite number" if finite else "a number"
        raise ValueError(f"{name} must be {kind} >= 0, got {value!r}")
    return float(value)


def float_array(value: Any, name: str, expected: str) -> np.ndarray:
    """``value`` as a float64 array; text, None, bool arrays or ragged lists raise a ValueError naming ``name``."""
    if value is None:  # np.array(None, float) is a NaN scalar
        raise ValueError(f"{name} must be {expected}, got None")
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}") from None
    if np.asarray(value).dtype.kind == "b":
        raise ValueError(f"{name} must be {expected}, got a bool array")
    return arr


def _describe(value: Any) -> str:
    if isinstance(value, (str, bytes)) or value is None or np.ndim(value) == 0:
        return repr(value)[:80]
    return f"a {type(value).__name__}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_fits(n_bytes: int, what: str, hint: str) -> None:
    """Refuses a table that cannot fit in this machine's memory, before numpy or C++ try to allocate it (a
    bad_alloc at best, the OOM killer at worst)."""
    total = physical_memory()
    if total is not None and n_bytes > total:
        raise ValueError(f"{what} would need {_size(n_bytes)}, more than this machine's {_size(total)} of memory; "
                         f"{hint}")
