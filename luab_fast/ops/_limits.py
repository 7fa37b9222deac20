"""Argument checks the ops share: integer arguments and the size of what an op is about to allocate.

An absurd size (``output_size=10**6``, ``num_classes=2**40``) must be a clear error naming the argument
before anything is allocated, never a MemoryError from the allocator or an int64 overflow in a kernel.
"""

from __future__ import annotations

import math
import operator

import torch

MAX_VALUES = 2 ** 31 - 1  # one buffer's values: 8 GiB of float32; the kernels index a row or a map in int32


def as_int(name: str, value, lo: int = 1, hi: int = MAX_VALUES) -> int:
    """``value`` as a Python int in [lo, hi] (numpy and 0-d integer tensors too, never a bool or a float)."""
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or not lo <= n <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return n


def check_size(name: str, shape: tuple[int, ...], layout: str, fix: str) -> None:
    """Raises ValueError naming ``name`` when a buffer of ``shape`` (described by ``layout``) would hold more
    than MAX_VALUES values."""
    n = math.prod(shape)
    if n > MAX_VALUES:
        raise ValueError(f"{name} asks for a {layout} buffer of {list(shape)} = {n:.3g} values; expected at most "
                         f"{MAX_VALUES} (2**31 - 1): {fix}")


def size_pair(name: str, value) -> tuple[int, int]:
    """``value`` (an int, or a pair of them) as (h, w), each in [1, MAX_VALUES]."""
    try:
        pair = (value, value) if not isinstance(value, (tuple, list, torch.Size)) else tuple(value)
        if len(pair) != 2:
            raise ValueError
        return as_int(name, pair[0]), as_int(name, pair[1])
    except ValueError:
        raise ValueError(f"{name} must be an integer in [1, {MAX_VALUES}] or a pair (h, w) of them, "
                         f"got {value!r}") from None
