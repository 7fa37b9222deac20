"""The packed COCO-AB store: one row per JSON record (duplicates kept), looked up by image id (the last
record of an id wins, as in the official loader), with crop-aware multi-label point targets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .._store.format import check_pack_result, check_writable, write_store
from .._store.index import lookup
from ._pack_coco import ACTIONS, COCO_CLASSES, pack_coco_arrays
from .records import CocoSample
from .store import FORMAT, VERSION, _Byproducts

_I16, _I32, _I64, _F32 = np.int16, np.int32, np.int64, np.float32
# How the arrays of a COCO-AB store fit together (``_store.layout.check_layout``): N records.
LAYOUT = {
    "image_id": (_I64, (), "N"), "worker": (_I32, (), "N"), "hit": (_I32, (), "N"), "page": (_I32, (), "N"),
    "display": (_I32, (2,), "N"), "original": (_I32, (2,), "N"), "time_spent": (_I64, (), "N"),
    "add_points": (_F32, (len(COCO_CLASSES), 2), "N"), "index_rows": (_I64, (), None), "index": (_I64, (), None),
    "workers": ("S", (), None), "hits": ("S", (), None), "icon_names": ("S", (), None),
    "category_names": ("S", (), None),
    "action_offsets": (_I64, (), "N+1"), "action_kind": (np.int8, (), "action_offsets"),
    "action_icon": (_I16, (), "action_offsets"), "action_icon_name": (_I32, (), "action_offsets"),
    "action_from": (_F32, (2,), "action_offsets"), "action_to": (_F32, (2,), "action_offsets"),
    "action_t": (_I64, (), "action_offsets"),
    "cat_offsets": (_I64, (), "N+1"), "cat_index": (_I16, (), "cat_offsets"), "cat_t": (_I64, (), "cat_offsets"),
    "cat_keyboard": (bool, (), "cat_offsets"), "cat_name": (_I32, (), "cat_offsets"),
    "trace_offsets": (_I64, (), "N+1"), "trace_xy": (_F32, (2,), "trace_offsets"),
    "trace_t": (_I64, (), "trace_offsets"),
}
REFS = (("worker", "workers"), ("hit", "hits"), ("action_icon_name", "icon_names"), ("cat_name", "category_names"),
        ("index_rows", "image_id"))


def write_coco_store(samples: Iterable[CocoSample], dst: str | os.PathLike,
                     meta: dict[str, Any] | None = None, replace_with_problems: bool = False) -> Path:
    """Packs COCO-AB samples into a store at ``dst`` (atomically; an existing ``dst`` must be a store). Nothing is
    written when there is no sample; a reader's ``problems`` keep an existing store unless
    ``replace_with_problems`` (see ``write_imagenet_store``)."""
    check_writable(dst, FORMAT)  # before the parse
    arrays = pack_coco_arrays(samples)
    source = getattr(samples, "path", None) or (meta or {}).get("source") or "samples"
    check_pack_result(dst, len(arrays["image_id"]), getattr(samples, "problems", []), source, "COCO-AB records",
                      replace_with_problems, expected="a JSON array of COCO-AB records (coco_ab_v1_0.json)")
    return write_store(dst, FORMAT, VERSION, arrays, {"kind": "coco", **(meta or {})})


def _int_ids(image_ids) -> np.ndarray:
    """COCO image ids as int64: integers only (a float or a string id would match the wrong image or none)."""
    a = np.asarray(image_ids)
    if a.ndim != 1 or not (a.dtype.kind in "iu" or a.size == 0):
        raise TypeError(f"image_ids must be a list of integer COCO image ids, got {a.dtype} {list(a.shape)}")
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise ValueError("image_ids must fit in int64")
    return a.astype(np.int64)


class CocoByproductStore(_Byproducts):
    """Memory-mapped COCO-AB store. ``classes`` lists the 80 target dimensions."""

    classes = COCO_CLASSES
    KIND, READS, LAYOUT, REFS, ROWS = "coco", "COCO-AB", LAYOUT, REFS, "image_id"
    RANGES = {"action_icon": (-1, len(COCO_CLASSES)), "action_kind": (-1, len(ACTIONS))}

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().__init__(path, arrays, meta)
        self.kind = "coco"

    @classmethod
    def _index_keys(cls, arrays: dict[str, np.ndarray], full: bool) -> np.ndarray:
        """The image id of each index row (the last record of an id); ``open`` only counts them."""
        if not full:
            return arrays["index_rows"]
        return np.asarray(arrays["image_id"])[np.asarray(arrays["index_rows"])]

    @property
    def ids(self) -> np.ndarray:
        """COCO image id of each row (int64; an id appears once per record)."""
        return np.asarray(self.arrays["image_id"])

    def _keys(self, image_ids) -> np.ndarray:
        return _int_ids(image_ids)

    def _lookup(self, keys) -> np.ndarray:
        """Row of each image id's last record, O(1) each (index_rows / index values outside the rows raise
        IndexError: verify() checks them, open() cannot afford to)."""
        slot = lookup(self.arrays["index"], self.ids[self.arrays["index_rows"]], keys)
        return np.where(slot >= 0, np.asarray(self.arrays["index_rows"])[np.maximum(slot, 0)], -1)

    def trace(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(xy [P, 2] float32, t [P] int64 ms since page start) of record ``i``."""
        lo, hi = self._span(i, "trace_offsets", "trace_t")
        return np.asarray(self.arrays["trace_xy"][lo:hi]), np.asarray(self.arrays["trace_t"][lo:hi])

    def coco_targets(self, rows, boxes, flips, gt_classes):
        """The official COCO loader's targets for crops of ``rows``: ``target`` [B, 80] float32 and
        ``points`` [B, 160] float32 as (y, x) pairs per class, −1 where missing. For each ground-truth class
        (``gt_classes`` bool [B, 80]): the last ``add`` point of that class, if it lies in the crop → label
        1 and its crop-normalised point; if it lies outside → label 0 (crop-aware masking); if the worker
        placed none → label 1, point −1. Torch tensors, on the device of ``boxes``."""
        import torch

        from .targets import check_batch, to_crop

        dev = boxes.device
        rows = rows.to(dev)
        check_batch(rows, boxes, flips, len(self))
        b = rows.shape[0]
        if gt_classes.shape != (b, len(COCO_CLASSES)) or gt_classes.dtype != torch.bool:
            raise ValueError(f"gt_classes must be a bool [B, 80] tensor with B={b}, got {gt_classes.dtype} "
                             f"{tuple(gt_classes.shape)}")
        pts = torch.from_numpy(np.asarray(self.arrays["add_points"])[rows.cpu().numpy()]).to(dev)  # [B, 80, 2]
        k = len(COCO_CLASSES)
        crop = to_crop(pts.reshape(-1, 2), boxes.repeat_interleave(k, 0), flips.repeat_interleave(k)).reshape(b, k, 2)
        has = torch.isfinite(pts).all(2)
        inside = has & (crop >= 0).all(2) & (crop <= 1).all(2)
        gt = gt_classes.to(dev)
        target = (gt & (inside | ~has)).to(torch.float32)
        yx = torch.where((gt & inside)[..., None], crop.flip(2), torch.full_like(crop, -1.0))
        return target, yx.reshape(b, 2 * k)
