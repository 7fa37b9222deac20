"""The packed, memory-mapped byproduct store: parse the release once, index it by row and image id.

>>> store = ByproductStore.open("imagenet_ab.store")
>>> i = store.row("n01440764_10026")
>>> xy, t = store.trace(i)                       # all workers' mouse traces of that image
>>> points, weights = store.point_targets(rows, boxes, flips)
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ._format import StoreError, check_writable, read_store, verify_store, write_store
from ._index import lookup_stems
from ._pack_imagenet import pack_imagenet_arrays
from .records import ImageNetSample

FORMAT = "luab_fast.byproducts"
VERSION = 1


def write_imagenet_store(samples: Iterable[ImageNetSample], dst: str | os.PathLike,
                         meta: dict[str, Any] | None = None) -> Path:
    """Packs ImageNet-AB samples into a store at ``dst`` (atomically; an existing ``dst`` must be a store)."""
    check_writable(dst, FORMAT)  # before the parse, which may take minutes
    arrays = pack_imagenet_arrays(samples)
    return write_store(dst, FORMAT, VERSION, arrays, {"kind": "imagenet", **(meta or {})})


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
        return cls(Path(path), arrays, meta)

    def verify(self) -> None:
        """Recomputes every array's checksum (reads the whole store); raises StoreError on a mismatch."""
        bad = verify_store(self.path)
        if bad:
            raise StoreError(f"{self.path}: arrays {bad} fail their checksums; re-pack the store")

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
        return lookup_stems(self.arrays["index"], self.arrays["ids"], image_ids)

    def row(self, image_id: str) -> int:
        """Row of one image (file stem, or a path / file name ending in it); KeyError when absent."""
        r = int(self.rows([image_id])[0])
        if r < 0:
            raise KeyError(image_id)
        return r

    def _check_row(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(f"row must be in [0, {len(self)}), got {i}")
        return int(i)

    def _ragged(self, i: int, offsets: str, *names: str) -> tuple[np.ndarray, ...]:
        """The slice of a per-record ragged array covering all records of sample ``i``."""
        i = self._check_row(i)
        rec = self.arrays["rec_offsets"]
        off = self.arrays[offsets]
        lo, hi = off[rec[i]], off[rec[i + 1]]
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
        return np.asarray(self.arrays["boxes"][off[i]:off[i + 1]])

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
