"""An open-addressing hash table (linear probing, load ≤ 0.5) stored as one int64 array, so a store
finds the row of an image id in O(1) straight from the memory map — no dict of 1.3M strings to build
on open. Keys are fixed-width byte strings (numpy ``S``) or int64; FNV-1a / splitmix64 hashes."""

from __future__ import annotations

import numpy as np

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def _hash(keys: np.ndarray) -> np.ndarray:
    """uint64 hashes of a 1-D ``S`` array (FNV-1a over the zero-padded bytes) or of int64 (splitmix64)."""
    with np.errstate(over="ignore"):
        if keys.dtype.kind == "S":
            b = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), keys.dtype.itemsize)
            h = np.full(len(keys), _FNV_OFFSET, np.uint64)
            for j in range(b.shape[1]):
                h = (h ^ b[:, j].astype(np.uint64)) * _FNV_PRIME
            return h
        z = keys.astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def build_index(keys: np.ndarray) -> np.ndarray:
    """Table of row numbers (-1 = empty). Duplicate keys: the first row wins."""
    n = len(keys)
    cap = 1 << max(4, int(2 * max(n, 1) - 1).bit_length())
    mask = np.uint64(cap - 1)
    table = np.full(cap, -1, np.int64)
    pos = (_hash(keys) & mask).astype(np.int64)
    pending = np.arange(n, dtype=np.int64)
    while pending.size:
        p = pos[pending]
        free = table[p] < 0
        # among the keys aiming at the same free slot, the lowest row takes it
        cand, slots = pending[free], p[free]
        _, first = np.unique(slots, return_index=True)
        table[slots[first]] = cand[first]
        placed = np.zeros(n, bool)
        placed[cand[first]] = True
        pending = pending[~placed[pending]]
        pos[pending] = (pos[pending] + 1) & (cap - 1)
    return table


def lookup(table: np.ndarray, keys_of_rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Rows of ``queries`` (same dtype as the keys), -1 where absent."""
    cap = len(table)
    q = np.asarray(queries, dtype=keys_of_rows.dtype)
    pos = (_hash(q) & np.uint64(cap - 1)).astype(np.int64)
    out = np.full(len(q), -1, np.int64)
    pending = np.arange(len(q))
    for _ in range(cap):
        if not pending.size:
            break
        rows = table[pos[pending]]
        empty = rows < 0
        hit = ~empty
        hit_idx = pending[hit]
        match = keys_of_rows[rows[hit]] == q[hit_idx]
        out[hit_idx[match]] = rows[hit][match]
        done = empty.copy()
        done[np.flatnonzero(hit)[match]] = True
        pending = pending[~done]
        pos[pending] = (pos[pending] + 1) & (cap - 1)
    return out


def file_stem(image_id: str | bytes) -> str:
    """``n01440764_18`` from itself, ``n01440764/n01440764_18.pt``, ``train/n01440764/n01440764_18.JPEG``
    or ``.../n01440764_18.xml``."""
    s = image_id.decode() if isinstance(image_id, bytes) else str(image_id)
    return s.replace("\\", "/").rsplit("/", 1)[-1].split(".", 1)[0]


def lookup_stems(table: np.ndarray, keys_of_rows: np.ndarray, image_ids) -> np.ndarray:
    """Rows of image ids given as stems or any path / file name ending in one (int64, −1 where absent)."""
    stems = [file_stem(s).encode() for s in image_ids]
    width = keys_of_rows.dtype.itemsize
    out = lookup(table, keys_of_rows, np.asarray([s[:width] for s in stems], dtype=keys_of_rows.dtype))
    out[[len(s) > width for s in stems]] = -1  # longer than any stored id: absent
    return out
