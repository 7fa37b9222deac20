"""The packed, memory-mapped byproduct store: parse the release once, index it by row and image id.

>>> store = ByproductStore.open("imagenet_ab.store")
>>> i = store.row("n01440764_10026")
>>> xy, t = store.trace(i)                       # all workers' mouse traces of that image
>>> points, weights = store.point_targets(rows, boxes, flips)
"""

from __future__ import annotations

import operator
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ._format import (StoreError, check_index, check_layout, check_pack_result, check_writable, damaged, read_store,
                      verify_store, write_store)
from ._index import lookup_stems
from ._pack_imagenet import pack_imagenet_arrays
from .records import ImageNetSample

FORMAT = "luab_fast.byproducts"
VERSION = 1

_I32, _I64, _F32 = np.int32, np.int64, np.float32
# How the arrays of an ImageNet-AB store fit together (``_format.check_layout``): N samples, R records.
LAYOUT = {
    "ids": ("S", (), "N"), "wnids": ("S", (), "N"), "index": (_I64, (), None), "size": (_I32, (2,), "N"),
    "click_point": (_F32, (2,), "N"), "box_offsets": (_I64, (), "N+1"), "boxes": (_F32, (4,), "box_offsets"),
    "rec_offsets": (_I64, (), "N+1"), "workers": ("S", (), None), "hits": ("S", (), None),
    "assignments": ("S", (), None),
    **{name: (dt, tr, "rec_offsets") for name, dt, tr in (
        ("rec_worker", _I32, ()), ("rec_hit", _I32, ()), ("rec_assignment", _I32, ()), ("rec_page", _I32, ()),
        ("rec_selected", bool, ()), ("rec_selected_count", _I32, ()), ("rec_hovered_count", _I32, ()),
        ("rec_estimate_time", _I64, ()), ("rec_display", _I32, (2,)), ("rec_original", _I32, (2,)),
        ("rec_position", _I32, (2,)))},
    "click_offsets": (_I64, (), "rec_offsets+1"), "trace_offsets": (_I64, (), "rec_offsets+1"),
    "hover_offsets": (_I64, (), "rec_offsets+1"),
    "click_xy": (_F32, (2,), "click_offsets"), "click_t": (_I64, (), "click_offsets"),
    "trace_xy": (_F32, (2,), "trace_offsets"), "trace_t": (_I64, (), "trace_offsets"),
    "hover_enter": (bool, (), "hover_offsets"), "hover_t": (_I64, (), "hover_offsets"),
}
REFS = (("rec_worker", "workers"), ("rec_hit", "hits"), ("rec_assignment", "assignments"))


def write_imagenet_store(samples: Iterable[ImageNetSample], dst: str | os.PathLike,
                         meta: dict[str, Any] | None = None, replace_with_problems: bool = False) -> Path:
    """Packs ImageNet-AB samples into a store at ``dst`` (atomically; an existing ``dst`` must be a store).

    Nothing is written when there is no sample; when ``samples`` is a reader that met problems (its
    ``problems``) an existing store at ``dst`` is kept unless ``replace_with_problems`` (DataError otherwise)."""
    check_writable(dst, FORMAT)  # before the parse, which may take minutes
    arrays = pack_imagenet_arrays(samples)
    source = getattr(samples, "src", None) or (meta or {}).get("source") or "samples"
    check_pack_result(dst, len(arrays["ids"]), getattr(samples, "problems", []), source, "ImageNet-AB files",
                      replace_with_problems, expected="the release's .tar.gz of train_xml/<wnid>/<stem>.xml files "
                                                      "or its extracted folder")
    return write_store(dst, FORMAT, VERSION, arrays, {"kind": "imagenet", **(meta or {})})


def _id_list(image_ids) -> list:
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


class ByproductStore:
    """A packed ImageNet-AB store, memory-mapped: opening reads only the manifest and maps the arrays."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.path, self.arrays, self.meta = path, arrays, meta
        self.kind = meta.get("kind", "imagenet")
        self._tensors: dict[str, Any] = {}

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ByproductStore":
        arrays, meta = read_store(path, FORMAT, (VERSION,))
        if meta.get("kind") != "imagenet":
            raise StoreError(f"{path} holds {meta.get('kind')!r} byproducts; ByproductStore reads ImageNet-AB")
        check_layout(path, arrays, LAYOUT, "ids")  # reads a few values: a damaged store fails here, not deep inside
        check_index(path, arrays["index"], arrays["ids"], full=False)
        return cls(Path(path), arrays, meta)

    def verify(self) -> None:
        """Recomputes every array's checksum and checks every offset and table reference (reads the whole store);
        raises StoreError on a mismatch."""
        bad = verify_store(self.path)
        if bad:
            raise StoreError(f"{self.path}: arrays {bad} fail their checksums; re-pack the store")
        check_layout(self.path, self.arrays, LAYOUT, "ids", full=True, refs=REFS)
        check_index(self.path, self.arrays["index"], self.arrays["ids"], full=True)

    # -- lookup --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.arrays["ids"])

    @cached_property
    def ids(self) -> np.ndarray:
        """Image ids (file stems) in row order, as a numpy str array."""
        return self.arrays["ids"].astype(str)

    def rows(self, image_ids: Iterable[str] | np.ndarray) -> np.ndarray:
        """Rows of many ids at once (int64, −1 where absent); O(1) each, from the on-disk hash table. An id
        is a file stem (``n01440764_18``) or any path or file name ending in one
        (``train/n01440764/n01440764_18.JPEG``, ``train_xml/n01440764/n01440764_18.xml``)."""
        image_ids = _id_list(image_ids)
        try:
            return lookup_stems(self.arrays["index"], self.arrays["ids"], image_ids)
        except IndexError:  # a slot points past the rows: checked by verify(), too slow for open()
            raise damaged(self.path, "the index points outside the rows") from None

    def row(self, image_id: str) -> int:
        """Row of one image (file stem, or a path / file name ending in it); KeyError when absent."""
        r = int(self.rows([image_id])[0])
        if r < 0:
            raise KeyError(image_id)
        return r

    def _check_row(self, i: int) -> int:
        return check_row(i, len(self))


    def _ragged(self, i: int, offsets: str, *names: str) -> tuple[np.ndarray, ...]:
        """The slice of a per-record ragged array covering all records of sample ``i``."""
        i = self._check_row(i)
        rec = self.arrays["rec_offsets"]
        off = self.arrays[offsets]
        try:  # open() checked the ends of every offsets array; verify() the values between them
            lo, hi = off[rec[i]], off[rec[i + 1]]
        except IndexError:
            raise damaged(self.path, f"rec_offsets[{i}] points past {offsets!r}") from None
        if not 0 <= lo <= hi <= len(self.arrays[names[0]]):
            raise damaged(self.path, f"{offsets!r} of row {i} is [{lo}, {hi})")
        return tuple(np.asarray(self.arrays[n][lo:hi]) for n in names)

    def trace(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(xy [P, 2] float32, t [P] int64 epoch ms): every worker's mouse trace of row ``i``."""
        return self._ragged(i, "trace_offsets", "trace_xy", "trace_t")  # type: ignore[return-value]

    def clicks(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(xy [C, 2] float32, t [C] int64): every selectedRecord of row ``i``, all workers."""
        return self._ragged(i, "click_offsets", "click_xy", "click_t")  # type: ignore[return-value]

    def boxes(self, i: int) -> np.ndarray:
        """ILSVRC boxes [n, 4] (xmin, ymin, xmax, ymax) in original pixels; empty when the file had none."""
        i = self._check_row(i)
        off = self.arrays["box_offsets"]
        lo, hi = off[i], off[i + 1]
        if not 0 <= lo <= hi <= len(self.arrays["boxes"]):
            raise damaged(self.path, f"'box_offsets' of row {i} is [{lo}, {hi})")
        return np.asarray(self.arrays["boxes"][lo:hi])

    def size(self, i: int) -> tuple[int, int]:
        """(width, height) of the original image in pixels (0, 0 when unknown)."""
        w, h = self.arrays["size"][self._check_row(i)]
        return int(w), int(h)

    # -- targets ---------------------------------------------------------------------------------------
    def to(self, device: Any) -> Any:
        """The arrays a training step needs as torch tensors on ``device`` (cached per device)."""
        from .targets import ByproductTensors

        key = str(device)
        if key not in self._tensors:
            # the tensors are copies of whole arrays: checking every offset first costs little beside that, and
            # a kernel must never gather past an array's end
            check_layout(self.path, self.arrays, {k: LAYOUT[k] for k in LAYOUT if k.endswith("offsets")}, "ids",
                         full=True)
            self._tensors[key] = ByproductTensors(self.arrays, device)
        return self._tensors[key]

    def point_targets(self, rows, boxes, flips, validate: bool = True):
        """(points [B, 2], weights [B]) for crops ``boxes`` [B, 4] and ``flips`` [B] of ``rows`` [B], on the
        device of ``boxes``; see :meth:`ByproductTensors.point_targets`."""
        return self.to(boxes.device).point_targets(rows, boxes, flips, validate)

    def raster_inputs(self, device) -> dict:
        """The whole store's traces and clicks on ``device``, as ``luab_fast.ops.rasterize_traces`` takes
        them (``rasterize_traces(**store.raster_inputs(dev), rows=rows, boxes=boxes, flips=flips)``)."""
        return self.to(device).raster_inputs()

    def traces_for(self, rows):
        """(points [P, 2], times [P], offsets [B + 1]) of a batch, on the device of ``rows``."""
        return self.to(rows.device).traces_for(rows)
