"""What every packed store does the same way: open (manifest, format, version, the cheap layout checks), verify
(checksums, then every value), its row count, id → row lookup through the on-disk index, and row checks. A store
declares its format, layout and index; it overrides a hook only where it differs."""

from __future__ import annotations

import operator
import os
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np

from .errors import StoreError, damaged
from .format import read_store, verify_store
from .index import lookup_stems
from .layout import Layout, check_index, check_layout


def id_list(image_ids) -> list:
    """``image_ids`` as a list of ids; a lone string (a common slip for ``[id]``) is refused, not read per letter."""
    if isinstance(image_ids, (str, bytes)):
        raise TypeError(f"image_ids must be a list of ids, got the single {type(image_ids).__name__} {image_ids!r}; "
                        f"use row() for one id")
    return list(image_ids)


def check_row(i, n: int) -> int:
    """``i`` as an int in [0, n): TypeError for a non-integer (a float or bool row is a bug upstream), IndexError
    outside."""
    if isinstance(i, (bool, np.bool_)):
        raise TypeError(f"row must be an integer, got {i!r}")
    try:
        i = operator.index(i)
    except TypeError:
        raise TypeError(f"row must be an integer, got {type(i).__name__} {i!r}") from None
    if not 0 <= i < n:
        raise IndexError(f"row must be in [0, {n}), got {i}")
    return i


class PackedStore:
    """A packed store, memory-mapped: opening reads only the manifest and maps the arrays. The default lookup is
    by file stem over the ``ids`` array (``rows`` takes stems or any path ending in one)."""

    FORMAT: ClassVar[str]
    VERSION: ClassVar[int]
    LAYOUT: ClassVar[Layout]
    ROWS: ClassVar[str] = "ids"  # the array with one entry per row
    REFS: ClassVar[Sequence[tuple[str, str]]] = ()  # (array, table) pairs ``verify`` checks
    RANGES: ClassVar[Mapping[str, tuple[int, int]] | None] = None  # value ranges ``verify`` checks

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.path, self.arrays, self.meta = path, arrays, meta

    @classmethod
    def open(cls, path: str | os.PathLike):
        """Maps a store; ``StoreError`` for a missing, corrupt, foreign, other-version or damaged store."""
        arrays, meta = read_store(path, cls.FORMAT, (cls.VERSION,))  # says what a path without a manifest is
        cls._check_meta(path, meta)
        cls._check(path, arrays, meta, full=False)  # reads a few values: a damaged store fails here, not deep inside
        return cls(Path(path), arrays, meta)

    def verify(self) -> None:
        """Recomputes every array's checksum, then checks every offset, reference and index slot (reads the whole
        store); raises StoreError on a mismatch."""
        bad = verify_store(self.path)
        if bad:
            raise StoreError(f"{self.path}: arrays {bad} fail their checksums; re-pack the store")
        self._check(self.path, self.arrays, self.meta, full=True)

    @classmethod
    def _check_meta(cls, path, meta: dict[str, Any]) -> None:
        """What the manifest's meta must say before the arrays are looked at (nothing, unless overridden)."""

    @classmethod
    def _check(cls, path, arrays: dict[str, np.ndarray], meta: dict[str, Any], full: bool) -> None:
        """The layout and the index: cheap on ``open``, every value with ``full`` (``verify``)."""
        check_layout(path, arrays, cls.LAYOUT, cls.ROWS, full=full, refs=cls.REFS, ranges=cls.RANGES)
        check_index(path, arrays["index"], cls._index_keys(arrays, full), full=full)

    @classmethod
    def _index_keys(cls, arrays: dict[str, np.ndarray], full: bool) -> np.ndarray:
        """The keys the on-disk index was built over (``open`` only counts them, ``verify`` reads them)."""
        return arrays["ids"]

    # -- lookup --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.arrays[self.ROWS])

    @cached_property
    def ids(self) -> np.ndarray:
        """Image ids (file stems) in row order, as a numpy str array."""
        return self.arrays["ids"].astype(str)

    def rows(self, image_ids: Iterable | np.ndarray) -> np.ndarray:
        """Rows of many ids at once (int64, −1 where absent); O(1) each, from the on-disk hash table."""
        keys = self._keys(image_ids)
        try:
            return self._lookup(keys)
        except IndexError:  # a slot points past the rows: checked by verify(), too slow for open()
            raise damaged(self.path, "the index points outside the rows") from None

    def _keys(self, image_ids) -> Any:
        """``image_ids`` as the lookup takes them (TypeError for what cannot be an id list)."""
        return id_list(image_ids)

    def _lookup(self, keys) -> np.ndarray:
        """Rows of ``keys`` (an IndexError means a damaged index). An id is a file stem (``n01440764_18``) or any
        path or file name ending in one (``train/n01440764/n01440764_18.JPEG``)."""
        return lookup_stems(self.arrays["index"], self.arrays["ids"], keys)

    def row(self, image_id) -> int:
        """Row of one image id; KeyError when absent."""
        r = int(self.rows([image_id])[0])
        if r < 0:
            raise KeyError(image_id)
        return r

    def _check_row(self, i: int) -> int:
        return check_row(i, len(self))

    def _span(self, i: int, offsets: str, data: str) -> tuple[Any, Any]:
        """(lo, hi) of row ``i`` in the ragged array ``data`` delimited by ``offsets`` [N + 1]."""
        i = check_row(i, len(self.arrays[self.ROWS]))
        off = self.arrays[offsets]
        lo, hi = off[i], off[i + 1]
        if not 0 <= lo <= hi <= len(self.arrays[data]):  # as _check_span, inline: a per-row call in drawing loops
            raise damaged(self.path, f"{offsets!r} of row {i} is [{lo}, {hi})")
        return lo, hi

    def _check_span(self, i: int, offsets: str, data: str, lo, hi) -> None:
        """open() checked the ends of every offsets array; verify() the values between them: a slice read between
        the two must still land inside its data."""
        if not 0 <= lo <= hi <= len(self.arrays[data]):
            raise damaged(self.path, f"{offsets!r} of row {i} is [{lo}, {hi})")
