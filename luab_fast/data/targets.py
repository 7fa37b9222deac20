"""Per-crop training targets, built on the device for a whole batch (no per-sample Python).

Every batch gets ``target``, its class target: int64 [B] class ids or float32 [B, C] distributions, from the
first source that has one for the image: the label-map store's pooled soft label (ReLabel) > the ``labels=``
posterior > the ``labels=`` hard label > the source's own (folder) label. With a byproduct store a batch also
gets ``point`` [B, 2] + ``point_weight`` [B] and ``heat`` [B, h, w].

Each store is keyed by image id (file stem); the mapping from the loader's rows to store rows is looked up
once, at build time. A row absent from a store gets weight 0 (no point, an empty heat map) or, for label maps,
the next class source; :meth:`Targets.coverage` counts those rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .._checks import is_integer
from .._cli import DataError
from .labels_table import labels_table
from .source import ImageList

BYPRODUCT_KEYS = ("point", "point_weight", "heat")  # what a byproduct store adds to a batch


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


def _heat_size(heat_size: Any) -> tuple[int, int]:
    if heat_size is None:  # a default size would silently disagree with the model's map
        raise ValueError("heat_size is required with byproducts: the (h, w) of the model's heat map "
                         "(LUABModel.heat_size), at which the trace heat maps are rasterised")
    if not (len(heat_size) == 2 and all(is_integer(v) and v >= 1 for v in heat_size)):
        raise ValueError(f"heat_size must be (h, w) with h, w >= 1, got {heat_size!r}")
    return int(heat_size[0]), int(heat_size[1])


def _store_rows(store, stems: list[str]) -> np.ndarray:
    """The store row of each source row; -1 where the store lacks the image."""
    return np.asarray(store.rows(stems), np.int64)


@dataclass(frozen=True)
class StoreCoverage:
    """The training images one store lacks, and what they get instead."""

    option: str  # the store's command-line option: --byproducts or --label-maps
    lacking: tuple[str, ...]  # their stems, in row order
    images: int  # all training images
    fallback: str  # e.g. "no byproducts (weight 0)"


class ByproductTargets:
    """The click point and the trace heat map of each crop, from a byproduct store (ImageNet-AB)."""

    def __init__(self, store: Any, stems: list[str], device: torch.device, heat_size: tuple[int, int],
                 heat_sigma: float) -> None:
        store = _open(store, "byproducts")
        rows = _store_rows(store, stems)
        self.lacking = rows < 0  # host copy: coverage is counted without a device sync
        self.host_rows = rows
        self.rows = torch.from_numpy(rows).to(device)
        self.tensors = store.to(device)
        self.raster = store.raster_inputs(device)
        # host copies of the ragged offsets: an augmented batch's traces are gathered by an index built on the host
        self.host_offsets = (self.raster["offsets"].cpu().numpy(), self.raster["clicks"][1].cpu().numpy())
        self.heat_size, self.heat_sigma = heat_size, heat_sigma

    def __call__(self, rows: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor,
                 augment: Optional[dict] = None) -> dict[str, torch.Tensor]:
        """``augment``: None, or the geometric augmentation (``forward`` [B, 2, 3] on the device, ``host_rows``,
        ``to_device``): the click moves with the pixels (weight 0 once outside) and so do the traces."""
        from ..ops import rasterize_traces

        srow = self.rows[rows]
        known = srow >= 0
        srow = srow.clamp(min=0)
        point, weight = self.tensors.point_targets(srow, boxes, flips, validate=False)  # no device sync
        raster = dict(self.raster, rows=srow, boxes=boxes, flips=flips)
        if augment is not None:
            from .augment_targets import move_points, moved_raster_inputs

            point, weight = move_points(point, weight, augment["forward"])
            raster = moved_raster_inputs(self.raster, *self.host_offsets, self.host_rows[augment["host_rows"]],
                                         boxes, flips, augment["forward"], augment["to_device"])
        heat = rasterize_traces(**raster, output_size=self.heat_size, sigma=self.heat_sigma, weighting="dwell",
                                normalize="sum", validate=False)
        return {"point": point, "point_weight": weight * known, "heat": heat * known[:, None, None]}


class LabelMapTargets:
    """ReLabel's soft label of each crop, pooled from a label-map store over the crop box."""

    def __init__(self, store: Any, stems: list[str], device: torch.device, box_order: str) -> None:
        store = _open(store, "label_maps").to(device)
        rows = _store_rows(store, stems)
        self.lacking = rows < 0
        self.rows = torch.from_numpy(rows).to(device)
        self.tensors, self.num_classes = store.tensors(), store.num_classes
        self.box_order = box_order

    def __call__(self, rows: torch.Tensor, boxes: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """float32 [B, C]: the pooled label, or ``fallback`` (class ids [B] or distributions [B, C]) for the
        images the store lacks."""
        from ..ops import label_pool_targets

        lrow = self.rows[rows]
        known = lrow >= 0
        scores, indices = self.tensors
        pooled = label_pool_targets(scores, indices, boxes, self.num_classes, box_order=self.box_order,
                                    rows=lrow.clamp(min=0), validate=False)
        if fallback.dim() == 1:
            fallback = torch.nn.functional.one_hot(fallback, self.num_classes).float()
        return torch.where(known[:, None], pooled, fallback)


class Targets:
    """Callable on a batch dict (``rows``, ``boxes``, ``flips``, ``labels``); returns ``target`` and, with
    ``byproducts``, the byproduct targets (``BYPRODUCT_KEYS``). ``heat_size`` is required with ``byproducts``."""

    def __init__(self, images: ImageList, device: torch.device, byproducts: Any = None, label_maps: Any = None,
                 labels: Any = None, heat_size: Optional[tuple[int, int]] = None, heat_sigma: float = 1.0,
                 box_order: str = "xyxy") -> None:
        heat_size = _heat_size(heat_size) if byproducts is not None else None
        self.images = images
        self.num_classes = len(images.classes)  # the model's outputs: every class source must score these
        keyed = byproducts is not None or label_maps is not None or labels is not None
        if keyed:
            _unique_stems(images)
        stems = images.stems if keyed else []
        self.byproducts = None if byproducts is None else ByproductTargets(byproducts, stems, device, heat_size,
                                                                           float(heat_sigma))
        self.label_maps = None if label_maps is None else LabelMapTargets(label_maps, stems, device, box_order)
        # the labels= table by row: hard labels int64 [N] or posteriors float32 [N, C]
        self.given_labels = None if labels is None else labels_table(labels, images).to(device)
        self._check_classes()

    def _check_classes(self) -> None:
        """The class sources score the data's classes (class k of each is the data's class k)."""
        given, maps = self.given_labels, self.label_maps
        if maps is not None and given is not None and given.dim() == 2 and given.shape[1] != maps.num_classes:
            raise DataError(f"labels: posteriors have {given.shape[1]} columns, the label-map store "
                            f"{maps.num_classes} classes")
        if given is not None and given.dim() == 1 and len(given):
            # posterior columns are checked against the classes where the file is read (labels_table.py)
            low, high = int(given.min()), int(given.max())
            if low < 0 or high >= self.num_classes:
                raise DataError(f"--labels: label ids must lie in [0, {self.num_classes}) (the training data's "
                                f"classes), got [{low}, {high}]")
        if maps is not None and maps.num_classes != self.num_classes:
            raise DataError(f"--label-maps: the store's maps score {maps.num_classes} classes, the training data "
                            f"has {self.num_classes} (its class k is the k-th folder in sorted order)")

    def __call__(self, batch: dict[str, torch.Tensor], augment: Optional[dict] = None) -> dict[str, torch.Tensor]:
        """``augment``: None or the batch's geometric augmentation (see :class:`ByproductTargets`; with
        ``inverse`` [B, 2, 3], the label maps are pooled over the part of the crop the image shows)."""
        rows, boxes = batch["rows"], batch["boxes"]
        label_boxes = boxes
        if augment is not None and self.label_maps is not None:
            from .augment_targets import pooling_boxes

            label_boxes = pooling_boxes(boxes, batch["flips"], augment["inverse"])
        out = {"target": self.class_target(rows, label_boxes, batch["labels"])}
        if self.byproducts is not None:
            out.update(self.byproducts(rows, boxes, batch["flips"], augment))
        return out

    def class_target(self, rows: torch.Tensor, boxes: torch.Tensor, source_labels: torch.Tensor) -> torch.Tensor:
        """The first source with a target for each row: label map > posterior > hard label > source label."""
        target = self.fallback_target(rows, source_labels)
        if self.label_maps is not None:
            target = self.label_maps(rows, boxes, fallback=target)
        return target

    def fallback_target(self, rows: torch.Tensor, source_labels: torch.Tensor) -> torch.Tensor:
        """The class target of the rows a label map lacks: the --labels target, else the source's label."""
        return source_labels if self.given_labels is None else self.given_labels[rows]

    def coverage(self) -> list[StoreCoverage]:
        """For each store given (byproducts, then label maps): the training images it lacks."""
        stems = self.images.stems
        report = []
        if self.byproducts is not None:
            report.append(_coverage("--byproducts", stems, self.byproducts.lacking, "no byproducts (weight 0)"))
        if self.label_maps is not None:
            instead = "--labels target" if self.given_labels is not None else "folder label"
            report.append(_coverage("--label-maps", stems, self.label_maps.lacking,
                                    f"no label map (their {instead} is used)"))
        return report


def _coverage(option: str, stems: list[str], lacking: np.ndarray, fallback: str) -> StoreCoverage:
    return StoreCoverage(option, tuple(s for s, absent in zip(stems, lacking.tolist()) if absent), len(stems),
                         fallback)
