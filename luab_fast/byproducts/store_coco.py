"""The packed COCO-AB store: one row per JSON record (duplicates kept), looked up by image id (the last
record of an id wins, as in the official loader), with crop-aware multi-label point targets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ._format import StoreError, read_store, verify_store, write_store
from ._index import lookup
from ._pack_coco import COCO_CLASSES, pack_coco_arrays
from .records import CocoSample
from .store import FORMAT, VERSION


def write_coco_store(samples: Iterable[CocoSample], dst: str | os.PathLike,
                     meta: dict[str, Any] | None = None) -> Path:
    """Packs COCO-AB samples into a store at ``dst`` (atomically)."""
    return write_store(dst, FORMAT, VERSION, pack_coco_arrays(samples), {"kind": "coco", **(meta or {})})


class CocoByproductStore:
    """Memory-mapped COCO-AB store. ``classes`` lists the 80 target dimensions."""

    classes = COCO_CLASSES

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.path, self.arrays, self.meta = path, arrays, meta
        self.kind = "coco"

    @classmethod
    def open(cls, path: str | os.PathLike) -> "CocoByproductStore":
        arrays, meta = read_store(path, FORMAT, (VERSION,))
        if meta.get("kind") != "coco":
            raise StoreError(f"{path} holds {meta.get('kind')!r} byproducts; CocoByproductStore reads COCO-AB")
        return cls(Path(path), arrays, meta)

    def verify(self) -> None:
        bad = verify_store(self.path)
        if bad:
            raise StoreError(f"{self.path}: arrays {bad} fail their checksums; re-pack the store")

    def __len__(self) -> int:
        return len(self.arrays["image_id"])

    @property
    def ids(self) -> np.ndarray:
        """COCO image id of each row (int64; an id appears once per record)."""
        return np.asarray(self.arrays["image_id"])

    def rows(self, image_ids) -> np.ndarray:
        """Row of each image id's last record (int64, −1 where absent), O(1) each."""
        keys = self.ids[self.arrays["index_rows"]]
        slot = lookup(self.arrays["index"], keys, np.asarray(image_ids, np.int64))
        return np.where(slot >= 0, np.asarray(self.arrays["index_rows"])[np.maximum(slot, 0)], -1)

    def row(self, image_id: int) -> int:
        r = int(self.rows([image_id])[0])
        if r < 0:
            raise KeyError(image_id)
        return r

    def trace(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(xy [P, 2] float32, t [P] int64 ms since page start) of record ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(f"row must be in [0, {len(self)}), got {i}")
        off = self.arrays["trace_offsets"]
        return np.asarray(self.arrays["trace_xy"][off[i]:off[i + 1]]), np.asarray(self.arrays["trace_t"][off[i]:off[i + 1]])

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
