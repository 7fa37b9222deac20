"""ImageNetSample stream → the columnar arrays of an ImageNet-AB store.

Per sample (N), per ``<metadata>`` record (R), and ragged per-record lists (clicks, trace points, hover
events) with CSR offsets. Strings go to tables (worker, HIT and assignment ids) referenced by int32.
Built in chunks so 1.3M samples never become 1.3M Python objects at once.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .._cli import DataError
from .._store.index import build_index
from .records import ImageNetSample

CHUNK = 16_384
_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1
# the record fields stored as int32 (the parsers accept any int64: a larger value is a problem of its file)
_RECORD_I32 = ("page_idx", "selected_count", "hovered_count", "image_width", "image_height", "original_width",
               "original_height")


def sample_problem(s: ImageNetSample) -> str | None:
    """Why ``s`` cannot go into a store (None when it can): an id or wnid that is empty or not ASCII (they are
    ImageNet file stems and folder names, stored as bytes and looked up as such), or a value too large for its
    int32 column (it would wrap silently)."""
    if not (s.image_id and s.image_id.isascii() and s.wnid.isascii()):
        return f"image id {s.image_id!r} / wnid {s.wnid!r}: expected non-empty ASCII ImageNet names"
    for name, v in (("size/width", s.width), ("size/height", s.height)):
        if not _I32_MIN <= v <= _I32_MAX:
            return f"{name}: {v} does not fit in int32"
    names = (*_RECORD_I32, "imagePosition/x", "imagePosition/y")
    for k, r in enumerate(s.records):
        vals = [getattr(r, f) for f in _RECORD_I32] + list(r.image_position)
        if min(vals) < _I32_MIN or max(vals) > _I32_MAX:
            name, v = next((n, v) for n, v in zip(names, vals) if not _I32_MIN <= v <= _I32_MAX)
            return f"metadata[{k}]/{name}: {v} does not fit in int32"
    return None


class _Interner:
    """String → dense int id, and the table of strings (UTF-8 bytes: worker and HIT ids are free text) in id
    order."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        return self.ids.setdefault(s, len(self.ids))

    def table(self) -> np.ndarray:
        if not self.ids:
            return np.zeros(0, "S1")
        return np.array([s.encode("utf-8") for s in self.ids], dtype="S")


def _cat(parts: list[np.ndarray], dtype, shape=()) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros((0, *shape), dtype)


def first_click_mean(click_xy: np.ndarray, click_off: np.ndarray, selected: np.ndarray,
                     rec_off: np.ndarray) -> np.ndarray:
    """The official loader's click target per sample: over records with ``selected == "True"`` and at
    least one selectedRecord, the mean of each record's *first* selectedRecord; NaN when there is none."""
    n = len(rec_off) - 1
    has = selected & (np.diff(click_off) > 0)
    rec_sample = np.repeat(np.arange(n), np.diff(rec_off))
    first = click_xy[click_off[:-1][has]].astype(np.float64) if has.any() else np.zeros((0, 2))
    sums = np.zeros((n, 2))
    np.add.at(sums, rec_sample[has], first)
    cnt = np.bincount(rec_sample[has], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / cnt[:, None]).astype(np.float32)


class _Column:
    """A growing column: Python values (or small arrays) for the current chunk, numpy chunks before it."""

    def __init__(self, dtype, shape=(), ragged: bool = False) -> None:
        self.dtype, self.shape, self.ragged = dtype, shape, ragged
        self.cur: list = []
        self.chunks: list[np.ndarray] = []
        self.name = ""

    def flush(self) -> None:
        if self.cur:
            arr = (np.concatenate(self.cur) if self.ragged else np.array(self.cur))
            if np.dtype(self.dtype) == np.int32 and arr.dtype.kind in "iu" and arr.dtype.itemsize > 4 and arr.size \
                    and (int(arr.min()) < _I32_MIN or int(arr.max()) > _I32_MAX):
                # the readers skip such files, naming them (sample_problem); this guards direct callers: no silent wrap
                self.cur = []
                raise DataError(f"{self.name or 'a column'}: a value outside int32 "
                                f"[{int(arr.min())}, {int(arr.max())}]; it cannot be stored")
            self.chunks.append(arr.astype(self.dtype, copy=False).reshape(-1, *self.shape))
            self.cur = []

    def array(self) -> np.ndarray:
        self.flush()
        return _cat(self.chunks, self.dtype, self.shape)

    def offsets(self) -> np.ndarray:
        """CSR offsets [n + 1] from a column of counts."""
        counts = self.array()
        out = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=out[1:])
        return out


def pack_imagenet_arrays(samples: Iterable[ImageNetSample]) -> dict[str, np.ndarray]:
    workers, hits, assignments = _Interner(), _Interner(), _Interner()
    ids, wnids = [], []
    col = {
        "size": _Column(np.int32, (2,)), "n_boxes": _Column(np.int64), "n_recs": _Column(np.int64),
        "boxes": _Column(np.float32, (4,), ragged=True),
        "rec_worker": _Column(np.int32), "rec_hit": _Column(np.int32), "rec_assignment": _Column(np.int32),
        "rec_page": _Column(np.int32), "rec_selected": _Column(bool), "rec_selected_count": _Column(np.int32),
        "rec_hovered_count": _Column(np.int32), "rec_estimate_time": _Column(np.int64),
        "rec_display": _Column(np.int32, (2,)), "rec_original": _Column(np.int32, (2,)),
        "rec_position": _Column(np.int32, (2,)),
        "n_click": _Column(np.int64), "n_trace": _Column(np.int64), "n_hover": _Column(np.int64),
        "click_xy": _Column(np.float32, (2,), True), "click_t": _Column(np.int64, (), True),
        "trace_xy": _Column(np.float32, (2,), True), "trace_t": _Column(np.int64, (), True),
        "hover_enter": _Column(bool, (), True), "hover_t": _Column(np.int64, (), True),
    }
    for name, c in col.items():
        c.name = name
    for k, s in enumerate(samples, 1):
        ids.append(s.image_id)
        wnids.append(s.wnid)
        w, h = s.width, s.height
        if (w <= 0 or h <= 0) and s.records:
            w, h = s.records[0].original_width, s.records[0].original_height
        col["size"].cur.append((w, h))
        bx = np.asarray(s.boxes, np.float32).reshape(-1, 4)
        col["boxes"].cur.append(bx)
        col["n_boxes"].cur.append(len(bx))
        col["n_recs"].cur.append(len(s.records))
        for r in s.records:
            col["rec_worker"].cur.append(workers(r.worker_id))
            col["rec_hit"].cur.append(hits(r.hit_id))
            col["rec_assignment"].cur.append(assignments(r.assignment_id))
            col["rec_page"].cur.append(r.page_idx)
            col["rec_selected"].cur.append(r.selected)
            col["rec_selected_count"].cur.append(r.selected_count)
            col["rec_hovered_count"].cur.append(r.hovered_count)
            col["rec_estimate_time"].cur.append(r.estimate_time)
            col["rec_display"].cur.append((r.image_width, r.image_height))
            col["rec_original"].cur.append((r.original_width, r.original_height))
            col["rec_position"].cur.append(tuple(r.image_position))
            for key in ("click_xy", "click_t", "trace_xy", "trace_t", "hover_enter", "hover_t"):
                col[key].cur.append(np.asarray(getattr(r, key)))
            col["n_click"].cur.append(len(r.click_t))
            col["n_trace"].cur.append(len(r.trace_t))
            col["n_hover"].cur.append(len(r.hover_t))
        if k % CHUNK == 0:
            for c in col.values():
                c.flush()

    def offsets(name: str) -> np.ndarray:
        return col[name].offsets()

    try:
        ids_arr = np.array(ids, dtype="S") if ids else np.zeros(0, "S1")
        wnids_arr = np.array(wnids, dtype="S") if wnids else np.zeros(0, "S1")
    except UnicodeEncodeError as exc:  # the readers skip such files, naming them (sample_problem)
        raise DataError(f"image ids and wnids must be ASCII ImageNet names, got {exc.object!r}") from None
    rec_off, click_off = offsets("n_recs"), offsets("n_click")
    arrays = {"ids": ids_arr, "index": build_index(ids_arr),
              "wnids": wnids_arr,
              "box_offsets": offsets("n_boxes"), "rec_offsets": rec_off, "click_offsets": click_off,
              "trace_offsets": offsets("n_trace"), "hover_offsets": offsets("n_hover"),
              "workers": workers.table(), "hits": hits.table(), "assignments": assignments.table()}
    for name, c in col.items():
        if not name.startswith("n_"):
            arrays[name] = c.array()
    arrays["click_point"] = first_click_mean(arrays["click_xy"], click_off, arrays["rec_selected"], rec_off)
    return arrays
