"""The argument and value checks the ops share, written once (the backend picker is ``_dispatch.py``).

- Sizes: integer arguments (``as_int``, ``size_pair``), what an op is about to allocate (``check_size``) and
  the output-size rule (``output_hw``). An absurd size (``output_size=10**6``, ``num_classes=2**40``) is a
  clear error naming the argument before anything is allocated, never a MemoryError from the allocator or an
  int64 overflow in a kernel.
- Values: each data-dependent check is a ``Problem`` (a message and a bool tensor left on the device);
  ``raise_first`` reads them all back in one device sync and raises the first that failed. What came
  (``first_bad``) is read on the error path only.
- The rules two ops state alike: crop boxes (``box_problem``) and rows into a store (``rows_problem``).
- Renamed keywords (``renamed_keyword``): the former name keeps working, with a DeprecationWarning.
"""

from __future__ import annotations

import math
import operator
import warnings
from typing import Callable, NamedTuple, Optional, Sequence

import torch

MAX_VALUES = 2 ** 31 - 1  # one buffer's values: 8 GiB of float32; the kernels index a row or a map in int32


# ---------------------------------------------------------------------------------------------- sizes
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


def output_hw(name: str, value, batch: int, layout: str, num_classes: Optional[int] = None) -> tuple[int, int]:
    """The output-size rule: ``value`` (an int or an (h, w) pair) as (h, w) for a float32 result [B, h, w]
    (``[B, C, h, w]`` with ``num_classes``), described by ``layout`` in the message. Refused before anything is
    allocated when the result (or its [B, C] part) would hold more than MAX_VALUES values; an empty batch
    counts as one, so an absurd size is an error whatever the batch."""
    h, w = size_pair(name, value)
    B = max(batch, 1)
    lead: tuple[int, ...] = (B,)
    if num_classes is not None:
        check_size("num_classes", (B, num_classes), "[B, C] float32 result", "is it the class count?")
        lead = (B, num_classes)
    check_size(name, (*lead, h, w), layout, f"choose a smaller {name} (or batch)")
    return h, w


# ---------------------------------------------------------------------------------------------- values
class Problem(NamedTuple):
    """One data-dependent check: ``message`` when ``bad`` (a 0-d bool tensor, left on the device) is True.
    ``detail()`` appends what came; it may read the device, so it runs on the error path only."""

    message: str
    bad: torch.Tensor
    detail: Optional[Callable[[], str]] = None


def raise_first(problems: Sequence[Problem]) -> None:
    """Reads every problem's ``bad`` back in one device sync; raises ValueError for the first that is True."""
    if not problems:
        return
    failed = torch.stack([p.bad for p in problems]).tolist()  # the one device sync
    for problem, bad in zip(problems, failed):
        if bad:
            raise ValueError(problem.message + (problem.detail() if problem.detail else ""))


def first_bad(name: str, t: torch.Tensor, bad: torch.Tensor, lead: str = ", got ") -> str:
    """', got name[i] = value' for the first row flagged in ``bad`` (for an error message)."""
    i = int(bad.nonzero()[0, 0])
    v = t[i].tolist()
    return f"{lead}{name}[{i}] = {tuple(round(x, 6) for x in v) if isinstance(v, list) else v}"


BOX_RULE = "boxes must be finite (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"


def box_ok(boxes: torch.Tensor) -> torch.Tensor:
    """[B] bool: the box is finite, inside [0, 1] and has x0 < x1, y0 < y1 (a NaN compares False)."""
    x0, y0, x1, y1 = boxes.unbind(1)
    return (x0 >= 0) & (y0 >= 0) & (x1 <= 1) & (y1 <= 1) & (x0 < x1) & (y0 < y1)


def box_problem(boxes: torch.Tensor) -> Problem:
    """The box rule (BOX_RULE) for float [B, 4] crop boxes, B >= 1; names the first bad box."""
    bad = ~box_ok(boxes)
    return Problem(BOX_RULE, bad.any(), lambda: first_bad("boxes", boxes, bad))


def rows_problem(rows: torch.Tensor, n: int, what: str) -> Problem:
    """``rows`` [B], B >= 1, must index ``n`` samples (``what`` they are, for the message)."""
    out = (rows < 0) | (rows >= n)
    return Problem(f"rows must lie in [0, {n}) ({what})", out.any(), lambda: first_bad("rows", rows, out))


# ---------------------------------------------------------------------------------------------- keywords
def renamed_keyword(op: str, new: str, value, default, old: str, old_value) -> tuple[str, object]:
    """(name, value) of keyword ``new`` of ``op``, formerly ``old``: ``value``, or ``old_value`` when the
    caller passed the former name (not None), with a DeprecationWarning. The name returned is the one the
    caller wrote, for error messages. torch.compile traces the call without the warning (it cannot trace
    ``warnings.warn``), so a compiled step keeps one graph."""
    if old_value is None:
        return new, value
    if not (value is default or (type(value) is type(default) and value == default)):
        raise TypeError(f"{op}() got both {new}= and its former name {old}=; pass {new} only")
    if not torch.compiler.is_compiling():
        warnings.warn(f"{op}(): {old}= is deprecated, pass {new}= (same meaning)", DeprecationWarning,
                      stacklevel=3)
    return old, old_value
