"""The packed, memory-mapped byproduct store: parse the release once, index it by row and image id.

>>> store = ByproductStore.open("imagenet_ab.store")
>>> i = store.row("n01440764_10026")
>>> xy, t = store.trace(i)                       # all workers' mouse traces of that image
>>> points, weights = store.point_targets(rows, boxes, flips)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .._store.base import PackedStore
from .._store.errors import StoreError, damaged
from .._store.format import check_pack_result, check_writable, write_store
from .._store.layout import check_layout
from ._pack_imagenet import pack_imagenet_arrays
from .records import ImageNetSample

FORMAT = "luab_fast.byproducts"
VERSION = 1

_I32, _I64, _F32 = np.int32, np.int64, np.float32
# How the arrays of an ImageNet-AB store fit together (``_store.layout.check_layout``): N samples, R records.
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


class _Byproducts(PackedStore):
    """The two byproduct stores share one format; the manifest's ``kind`` says which one a store holds."""

    FORMAT, VERSION = FORMAT, VERSION
    KIND: str  # meta["kind"] of the stores this class reads
    READS: str  # the release it reads, for the message

    @classmethod
    def _check_meta(cls, path, meta: dict[str, Any]) -> None:
        if meta.get("kind") != cls.KIND:
            raise StoreError(f"{path} holds {meta.get('kind')!r} byproducts; {cls.__name__} reads {cls.READS}")


class ByproductStore(_Byproducts):
    """A packed ImageNet-AB store, memory-mapped: opening reads only the manifest and maps the arrays."""

    KIND, READS, LAYOUT, REFS = "imagenet", "ImageNet-AB", LAYOUT, REFS

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().__init__(path, arrays, meta)
        self.kind = meta.get("kind", "imagenet")
        self._tensors: dict[str, Any] = {}

    def _ragged(self, i: int, offsets: str, *names: str) -> tuple[np.ndarray, ...]:
        """The slice of a per-record ragged array covering all records of sample ``i``."""
        i = self._check_row(i)
        rec = self.arrays["rec_offsets"]
        off = self.arrays[offsets]
        try:  # open() checked the ends of every offsets array; verify() the values between them
            lo, hi = off[rec[i]], off[rec[i + 1]]
        except IndexError:
            raise damaged(self.path, f"rec_offsets[{i}] points past {offsets!r}") from None
        self._check_span(i, offsets, names[0], lo, hi)
        return tuple(np.asarray(self.arrays[n][lo:hi]) for n in names)

    def trace(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(xy [P, 2] float32, t [P] int64 epoch ms): every worker's mouse trace of row ``i``."""
        return self._ragged(i, "trace_offsets", "trace_xy", "trace_t")  # type: ignore[return-value]

    def clicks(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(xy [C, 2] float32, t [C] int64): every selectedRecord of row ``i``, all workers."""
        return self._ragged(i, "click_offsets", "click_xy", "click_t")  # type: ignore[return-value]

    def boxes(self, i: int) -> np.ndarray:
        """ILSVRC boxes [n, 4] (xmin, ymin, xmax, ymax) in original pixels; empty when the file had none."""
        lo, hi = self._span(i, "box_offsets", "boxes")
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
