"""How a store's arrays fit together: dtypes, trailing shapes, lengths from the row count or an offsets array,
references into tables, value ranges, and the on-disk id index. ``open`` runs the cheap checks, ``verify`` all."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .errors import damaged
from .index import lookup

# A store layout: array name → (dtype: a numpy dtype, or "S" for any fixed-width bytes; trailing dimensions;
# length: None (any), "N" (the row count), "N+1", an offsets array's name (its last value) or that name + "+1").
Layout = Mapping[str, tuple[Any, tuple[int, ...], "str | None"]]


def _expected_len(spec: str, n: int, arrays: Mapping[str, np.ndarray]) -> int:
    base, plus = (spec[:-2], 1) if spec.endswith("+1") else (spec, 0)
    return (n if base == "N" else int(arrays[base][-1])) + plus


def check_layout(path, arrays: Mapping[str, np.ndarray], layout: Layout, rows: str, *, full: bool = False,
                 refs: Sequence[tuple[str, str]] = (), ranges: Mapping[str, tuple[int, int]] | None = None) -> None:
    """Raises :func:`damaged` unless the arrays fit together: every name of ``layout`` present with its dtype and
    trailing shape, each length what the row count or its offsets array says, every offsets array starting at 0.
    All that reads a few values (``open`` runs it). ``full`` also reads everything: offsets never decrease, each
    ``(array, table)`` of ``refs`` indexes inside its table, each array of ``ranges`` holds values in [lo, hi)."""
    missing = [name for name in layout if name not in arrays]
    if missing:
        raise damaged(path, f"arrays {missing} are missing")
    n = len(arrays[rows]) if arrays[rows].ndim else -1
    for name, (dtype, trailing, length) in layout.items():
        a = arrays[name]
        ok_dtype = a.dtype.kind == "S" if dtype == "S" else a.dtype == np.dtype(dtype)
        if not ok_dtype or a.ndim != 1 + len(trailing) or tuple(a.shape[1:]) != tuple(trailing):
            want = "bytes" if dtype == "S" else np.dtype(dtype).name
            raise damaged(path, f"array {name!r} is {a.dtype.name}{list(a.shape)}, expected {want}"
                                f"[{', '.join(['n', *map(str, trailing)])}]")
        if length is None:
            continue
        if length.endswith("offsets") or length.endswith("offsets+1"):
            off = arrays[length.removesuffix("+1")]
            if len(off) == 0 or int(off[0]) != 0:
                raise damaged(path, f"array {length.removesuffix('+1')!r} does not start at 0")
        want = _expected_len(length, n, arrays)
        if len(a) != want:
            raise damaged(path, f"array {name!r} has {len(a)} rows, expected {want} "
                                f"({'the row count' if length.startswith('N') else length + '[-1]'})")
    if not full:
        return
    for name, (_, _, _) in layout.items():
        if name.endswith("offsets") and len(arrays[name]) > 1 and bool((np.diff(arrays[name]) < 0).any()):
            raise damaged(path, f"array {name!r} decreases")
    for name, table in refs:
        a = np.asarray(arrays[name])
        if a.size and (int(a.min()) < 0 or int(a.max()) >= len(arrays[table])):
            raise damaged(path, f"array {name!r} holds values in [{int(a.min())}, {int(a.max())}], outside its "
                                f"table {table!r} of {len(arrays[table])}")
    for name, (lo, hi) in (ranges or {}).items():
        a = np.asarray(arrays[name])
        if a.size and (int(a.min()) < lo or int(a.max()) >= hi):
            raise damaged(path, f"array {name!r} holds values in [{int(a.min())}, {int(a.max())}], expected "
                                f"[{lo}, {hi})")


def check_index(path, table: np.ndarray, keys: np.ndarray, full: bool) -> None:
    """The on-disk hash table over ``keys``: a power-of-two length above the key count (cheap); with ``full``, rows
    in [-1, len(keys)) and every key found at a row holding the same key."""
    cap = len(table)
    if cap < 2 * len(keys) - 1 or cap < 16 or cap & (cap - 1):
        raise damaged(path, f"the index has {cap} slots for {len(keys)} keys")
    if not full:
        return
    if cap and (int(table.min()) < -1 or int(table.max()) >= len(keys)):
        raise damaged(path, "the index points outside the rows")
    found = lookup(np.asarray(table), np.asarray(keys), np.asarray(keys))
    if len(keys) and ((found < 0).any() or (np.asarray(keys)[np.maximum(found, 0)] != np.asarray(keys)).any()):
        raise damaged(path, "the index does not find every id")
