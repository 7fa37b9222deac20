"""Per-crop training targets from the stores, built on the device for a whole batch (no per-sample Python).

Each store is keyed by image id (file stem); the mapping from the loader's rows to store rows is looked up
once, at build time. A row absent from a store gets weight 0 (no point, an empty heat map) or, for label maps, its
``labels=`` target (aggregated label or posterior) where one is given, else the source's label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .._cli import DataError
from .labels_table import labels_table
from .source import ImageList


def _open(store: Any, kind: str):
    if isinstance(store, (str, Path)):
        if kind == "byproducts":
            from ..byproducts import ByproductStore

            return ByproductStore.open(store)
        from ..relabel import LabelMapStore

        return LabelMapStore.open(store)
    return store


def _unique_stems(images: ImageList) -> None:
    """Stores and label tables find an image by its file stem: two images of one stem would share one row."""
    seen: dict[str, str] = {}
    dup = []
    for f, stem in zip(images.files, images.stems):
        if stem in seen:
            dup.append(f"{stem} ({seen[stem]} and {f})")
        seen.setdefault(stem, f)
    if dup:
        raise DataError(f"{len(dup)} image file stem(s) occur more than once in the data, e.g. {dup[:2]}; "
                        f"--labels, --byproducts and --label-maps find images by file stem, so stems must be unique")


class Targets:
    """Callable on a batch dict; returns the extra target tensors."""

    def __init__(self) -> None:
        self.byproducts = self.label_maps = self.labels = None

    @classmethod
    def build(cls, images: ImageList, device: torch.device, byproducts: Any, label_maps: Any, labels: Any,
              heat_size: tuple[int, int], heat_sigma: float, box_order: str) -> Optional["Targets"]:
        if byproducts is None and label_maps is None and labels is None:
            return None
        t = cls()
        t.device, t.heat_size, t.heat_sigma, t.box_order = device, tuple(heat_size), float(heat_sigma), box_order
        stems = images.stems
        _unique_stems(images)
        if byproducts is not None:
            store = _open(byproducts, "byproducts")
            t.bp_rows = torch.from_numpy(np.asarray(store.rows(stems), np.int64)).to(device)
            t.byproducts = store.to(device)
            t.raster = store.raster_inputs(device)
        if label_maps is not None:
            store = t.label_maps = _open(label_maps, "label_maps").to(device)
            t.lm_rows = torch.from_numpy(np.asarray(store.rows(stems), np.int64)).to(device)
            t.lm_tensors, t.num_classes = store.tensors(), store.num_classes
        if labels is not None:
            t.labels = labels_table(labels, images).to(device)
            if label_maps is not None and t.labels.dim() == 2 and t.labels.shape[1] != t.num_classes:
                raise DataError(f"labels: posteriors have {t.labels.shape[1]} columns, the label-map store "
                                f"{t.num_classes} classes")
        return t

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from ..ops import label_pool_targets, rasterize_traces

        out: dict[str, torch.Tensor] = {}
        rows, boxes, flips = batch["rows"], batch["boxes"], batch["flips"]
        if self.labels is not None:
            if self.labels.dim() == 1:
                out["labels"] = self.labels[rows]
            else:
                out["soft_labels"] = self.labels[rows]
        if self.byproducts is not None:
            srow = self.bp_rows[rows]
            known = srow >= 0
            srow = srow.clamp(min=0)
            point, weight = self.byproducts.point_targets(srow, boxes, flips, validate=False)  # no device sync
            out["point"], out["point_weight"] = point, weight * known
            heat = rasterize_traces(**self.raster, rows=srow, boxes=boxes, flips=flips, out_size=self.heat_size,
                                    sigma=self.heat_sigma, weighting="dwell", normalize="sum", validate=False)
            out["heat"] = heat * known[:, None, None]
        if self.label_maps is not None:
            lrow = self.lm_rows[rows]
            known = lrow >= 0
            scores, indices = self.lm_tensors
            soft = label_pool_targets(scores, indices, boxes, self.num_classes, box_order=self.box_order,
                                      rows=lrow.clamp(min=0), validate=False)
            if "soft_labels" in out:  # posteriors from labels=: the fallback of images the store lacks
                fallback = out["soft_labels"]
            else:  # the aggregated label where labels= gives one, not the folder's
                fallback = torch.nn.functional.one_hot(out.get("labels", batch["labels"]), self.num_classes).float()
            out["soft_labels"] = torch.where(known[:, None], soft, fallback)
        return out
