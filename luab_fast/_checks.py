"""Predicates and the memory estimate every package's argument checks share.

bool is refused wherever a number goes (``True`` is an int to Python, never what a caller means by 1).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """An int or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """An int or float (numpy's too), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def physical_memory() -> int | None:
    """This machine's memory in bytes; None where the platform does not say (then nothing is refused)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
