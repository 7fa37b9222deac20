"""Weakly supervised object localisation (WSOL) scores of a classifier's score maps, the protocol of Choe et al.,
"Evaluating Weakly Supervised Object Localization Methods Right" (CVPR 2020; code: clovaai/wsolevaluation).

Score maps: for a plain CNN the class activation map (CAM, Zhou et al. CVPR 2016) of the ground-truth class,
``cam(features, classifier_weight, classes)`` or ``timm_cam(model, images, classes)``; for a LUAB model the heat
head's map, ``LUABModel.forward(images)[2]`` ([B, h, w], luab_fast/train/model.py). Each map is resized to the
evaluated image's size with bicubic interpolation and min-max normalised to [0, 1] (their ``inference.py``:
``cv2.resize(..., INTER_CUBIC)``, ``normalize_scoremap``; a constant or NaN map becomes all zeros).

Boxes from a map (their ``evaluation.py``, ``compute_bboxes_from_scoremaps``): the map is quantised to uint8
(× 255), the pixels above ``int(τ × max)`` kept, and each 8-connected region's bounding box (x0, y0, x1 + 1,
y1 + 1), clipped to W − 1 / H − 1, is a candidate; MaxBoxAcc keeps the largest region, MaxBoxAccV2 every region
("multi-contour"); no region gives the box (0, 0, 0, 0). IoU counts pixels inclusively (+1), as theirs. Their
τ list is ``np.arange(0, 1, 0.001)``. Where this differs from their cv2 code: regions are scipy's connected
components (cv2 is not installed here; the outer contours cv2 finds bound exactly these components), the largest
is the one of most pixels (theirs: largest contour polygon area, which can differ for thin regions), and the
boxes of holes, which cv2's RETR_TREE also lists, are left out (a hole lies inside its region's box).

Metrics (fractions in [0, 1]):
- ``maxboxacc``: max over τ of the share of images whose largest-region box has IoU ≥ 0.5 with a GT box
  (their MaxBoxAcc, ``--box_v2_metric False``);
- ``maxboxacc_v2``: the mean over δ ∈ {0.3, 0.5, 0.7} of the max over τ of the share of images with any region
  box of IoU ≥ δ (their default metric), and each ``maxboxacc_v2_iou{30,50,70}``;
- ``gt_known_loc`` / ``top1_loc``: at one threshold ``fixed_threshold`` (default 0.2, CAM's 20 % of the max), the
  largest region's box has IoU ≥ 0.5 (and, for top-1 loc, the top-1 class is right);
- ``pointing_game``: the map's peak lies inside a GT box (grown by ``pointing_tolerance`` pixels; Zhang et al.,
  ECCV 2016, use 15 px at the input's scale; default 0).

Ground truth: ILSVRC boxes per image from the Pascal-VOC-like XML (``read_box_xml``) or Kaggle's
``LOC_val_solution.csv`` (``read_loc_solution``), mapped into the evaluated crop by ``transform_boxes``
(``mode="resize_crop"``: shorter side to ``resize`` then centre crop ``crop``, torchvision's eval transform;
``mode="square"``: resize to crop × crop, the wsolevaluation loader; boxes truncated to int as their
``resize_bbox``).

How to call (streaming; maps of any size, images of one size per call)::

    meter = LocalizationMeter(workers=8)                    # workers: processes for the box search (0: none)
    for images, gt_boxes, labels in batches:               # gt_boxes: list of [K_i, 4] x0,y0,x1,y1 crop px
        logits, point, heat = luab_model(images)            # or: maps = timm_cam(model, images, labels)
        meter.update(heat, gt_boxes, correct=logits.argmax(1) == labels, image_size=images.shape[-2:])
    metrics = meter.compute()   # {"pointing_game", "gt_known_loc", "top1_loc", "maxboxacc", "maxboxacc_v2",
                                #  "maxboxacc_v2_iou30/50/70", "best_threshold", "n"}
"""

from __future__ import annotations

import multiprocessing
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from .._cli import DataError

CAM_THRESHOLDS = np.arange(0, 1, 0.001)  # wsolevaluation config.py: --cam_curve_interval 0.001
IOU_V2 = (0.3, 0.5, 0.7)  # wsolevaluation config.py: --iou_threshold_list 30 50 70
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity: cv2.findContours traces 8-connected regions


def read_box_xml(path: str | Path) -> tuple[list[str], np.ndarray, tuple[int, int]]:
    """(wnid per box, boxes int64 [K, 4] x0 y0 x1 y1, (width, height)) of one ILSVRC annotation XML."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"box annotation {path} is not valid XML ({exc})") from None
    try:
        size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
        names, boxes = [], []
        for obj in root.iter("object"):
            names.append(obj.findtext("name").strip())
            boxes.append([int(float(obj.findtext(f"bndbox/{k}"))) for k in ("xmin", "ymin", "xmax", "ymax")])
    except (TypeError, ValueError, AttributeError):
        raise DataError(f"box annotation {path}: expected <size><width/><height/></size> and <object><name/>"
                        f"<bndbox><xmin/><ymin/><xmax/><ymax/></bndbox></object> with integers") from None
    if not boxes:
        raise DataError(f"box annotation {path} holds no <object> box")
    return names, _checked_boxes(np.asarray(boxes, np.int64), str(path)), size


def read_loc_solution(path: str | Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """{image id: (wnid per box, boxes int64 [K, 4])} of Kaggle's ``LOC_val_solution.csv`` (columns ImageId,
    PredictionString = "wnid x0 y0 x1 y1 wnid x0 y0 x1 y1 ...")."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"box annotations {path} cannot be read as CSV ({exc})") from None
    if list(table.columns[:2]) != ["ImageId", "PredictionString"]:
        raise DataError(f"box annotations {path}: expected columns ImageId,PredictionString, got "
                        f"{list(table.columns)[:4]}")
    out = {}
    for row, (image, boxes) in enumerate(zip(table["ImageId"], table["PredictionString"]), start=2):
        parts = str(boxes).split()
        try:
            if not parts or len(parts) % 5:
                raise ValueError
            names = parts[0::5]
            arr = np.asarray([[int(v) for v in parts[i + 1:i + 5]] for i in range(0, len(parts), 5)], np.int64)
        except ValueError:
            raise DataError(f"box annotations {path}, line {row}: PredictionString must be groups of "
                            f"'wnid x0 y0 x1 y1', got {str(boxes)[:80]!r}") from None
        out[str(image)] = (names, _checked_boxes(arr, f"{path}, line {row}"))
    if not out:
        raise DataError(f"box annotations {path} hold no rows")
    return out


def _checked_boxes(boxes: np.ndarray, where: str) -> np.ndarray:
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]) | (boxes < 0).any(1)).any():
        raise DataError(f"box annotation {where}: boxes must satisfy 0 <= x0 <= x1 and 0 <= y0 <= y1, got "
                        f"{boxes.tolist()[:3]}")
    return boxes


def transform_boxes(boxes: Any, image_size: tuple[int, int], crop: int = 224, resize: int = 256,
                    mode: str = "resize_crop") -> np.ndarray:
    """``boxes`` [K, 4] (x0, y0, x1, y1 in pixels of an image of ``image_size`` = (width, height)) in the
    coordinates of the evaluated crop, int64, clipped to it (a box outside the crop has zero width or height)."""
    b = np.asarray(boxes, np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be [K, 4], got shape {b.shape}")
    w, h = image_size
    if w <= 0 or h <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    if mode == "square":  # wsolevaluation resize_bbox: scale each axis to crop, int() truncation
        out = np.floor(b * np.array([crop / w, crop / h] * 2))
    elif mode == "resize_crop":  # torchvision Resize(resize) then CenterCrop(crop)
        if resize < crop:
            raise ValueError(f"resize ({resize}) must be at least crop ({crop})")
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(resize * long / short)  # torchvision's _compute_resized_output_size truncates
        new_w, new_h = (resize, new_long) if w <= h else (new_long, resize)
        left, top = int(round((new_w - crop) / 2.0)), int(round((new_h - crop) / 2.0))
        out = np.floor(b * np.array([new_w / w, new_h / h] * 2) - np.array([left, top] * 2))
    else:
        raise ValueError(f"mode must be 'resize_crop' or 'square', got {mode!r}")
    return np.clip(out, 0, crop - 1).astype(np.int64)


def cam(features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Class activation maps [B, h, w]: Σ_f weight[classes[b], f] · features[b, f] for ``features`` [B, F, h, w]
    and a linear classifier ``weight`` [C, F] after global average pooling (its bias shifts a map uniformly,
    which min-max normalisation removes)."""
    if features.dim() != 4 or weight.dim() != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(f"features must be [B, F, h, w] and weight [C, F], got {tuple(features.shape)} and "
                         f"{tuple(weight.shape)}")
    if classes.shape != (features.shape[0],):
        raise ValueError(f"classes must be [{features.shape[0]}], got {tuple(classes.shape)}")
    return torch.einsum("bfhw,bf->bhw", features.float(), weight[classes].float())


def timm_cam(model: torch.nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """CAMs [B, h, w] of a timm CNN (``forward_features`` → [B, F, h, w], ``get_classifier()`` a Linear)."""
    head = model.get_classifier()
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"CAM needs a linear classifier after global pooling; {type(model).__name__} has "
                         f"{type(head).__name__}")
    feats = model.forward_features(images)
    if feats.dim() != 4:
        raise ValueError(f"CAM needs a [B, F, h, w] feature map; {type(model).__name__}.forward_features gave "
                         f"{tuple(feats.shape)}")
    return cam(feats, head.weight, classes)


def normalize_maps(maps: Any, size: Sequence[int]) -> np.ndarray:
    """``maps`` [B, h, w] resized bicubically to ``size`` = (H, W) and min-max normalised per map to [0, 1]
    (float64; a constant or NaN map gives zeros, as wsolevaluation's ``normalize_scoremap``)."""
    m = torch.as_tensor(maps).detach().float().cpu()
    if m.dim() != 3:
        raise ValueError(f"maps must be [B, h, w], got shape {tuple(m.shape)}")
    m = F.interpolate(m[:, None], size=tuple(int(s) for s in size), mode="bicubic", align_corners=False)[:, 0]
    m = m.double().numpy()
    lo, hi = m.min(axis=(1, 2), keepdims=True), m.max(axis=(1, 2), keepdims=True)
    bad = np.isnan(m).any(axis=(1, 2), keepdims=True) | (hi == lo)
    return np.where(bad, 0.0, (m - lo) / np.where(bad, 1.0, hi - lo))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [A, B] of int boxes x0 y0 x1 y1, pixels counted inclusively (+1) as wsolevaluation does."""
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0] + 1) * (x[:, 3] - x[:, 1] + 1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def best_ious(score_map: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU of the largest region's box, best IoU of any region's box) with the GT boxes ``gt`` [K, 4], per
    threshold, for one normalised map [H, W]. Each distinct mask is labelled once: at most 256 (the uint8
    levels), fewer where the map lacks values between two thresholds. A loop over levels (scipy labels one mask
    per call; a 3-D stack labelled at once measured slower), each labelling only the bounding box of the level
    below, since a higher threshold's mask lies inside a lower one's."""
    height, width = score_map.shape
    u8 = (score_map * 255).astype(np.uint8)
    levels = (thresholds * int(u8.max())).astype(np.int64)  # their cv2.threshold(thresh=int(τ · max))
    present = np.zeros(256, bool)
    present[u8.ravel()] = True
    # u8 > L is the same mask for every L between two values the map holds: label each distinct mask once
    _, first, inverse = np.unique(np.cumsum(present)[levels], return_index=True, return_inverse=True)
    nothing = box_iou(np.zeros((1, 4), np.int64), gt).max()  # no region: their box (0, 0, 0, 0)
    single, multi = np.full(len(first), nothing), np.full(len(first), nothing)
    y0, y1, x0, x1 = 0, height, 0, width
    for j, level in enumerate(levels[first]):  # ascending: each mask inside the previous one's box
        win = u8[y0:y1, x0:x1] > level
        rows, cols = np.flatnonzero(win.any(1)), np.flatnonzero(win.any(0))
        if not len(rows):
            break  # every higher level is empty too
        win = win[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        y0, y1, x0, x1 = y0 + rows[0], y0 + rows[-1] + 1, x0 + cols[0], x0 + cols[-1] + 1
        labels, n = ndimage.label(win, structure=_EIGHT)
        if n == 1:
            s = np.asarray([[y0, y1, x0, x1]])
        else:
            s = np.asarray([[sy.start + y0, sy.stop + y0, sx.start + x0, sx.stop + x0]
                            for sy, sx in ndimage.find_objects(labels)])
        boxes = np.stack([s[:, 2], s[:, 0], np.minimum(s[:, 3], width - 1), np.minimum(s[:, 1], height - 1)], 1)
        iou = box_iou(boxes, gt).max(1)
        multi[j] = iou.max()
        single[j] = iou[0] if n == 1 else iou[np.argmax(np.bincount(labels.ravel(), minlength=n + 1)[1:])]
    return single[inverse], multi[inverse]


def _best_ious_job(job: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return best_ious(*job)


class LocalizationMeter:
    """Accumulates the WSOL metrics over batches; ``compute()`` gives the dict described in the module doc.
    ``workers`` > 1 spreads the maps' box searches over that many processes (scipy holds the GIL, so threads do
    not help; "spawn" processes, never forked from a parent that may hold CUDA or loader threads); ``close()``
    (also done by ``compute()``) ends them."""

    def __init__(self, cam_thresholds: Optional[Sequence[float]] = None, fixed_threshold: float = 0.2,
                 pointing_tolerance: int = 0, workers: int = 0) -> None:
        t = np.asarray(CAM_THRESHOLDS if cam_thresholds is None else cam_thresholds, np.float64)
        if t.ndim != 1 or not len(t) or (t < 0).any() or (t >= 1).any():
            raise ValueError(f"cam_thresholds must be a non-empty list in [0, 1), got {t.shape} values")
        if not 0 <= fixed_threshold < 1 or pointing_tolerance < 0:
            raise ValueError(f"fixed_threshold must be in [0, 1) and pointing_tolerance >= 0, got "
                             f"{fixed_threshold} and {pointing_tolerance}")
        self.thresholds = np.append(t, fixed_threshold)  # the last one is the fixed threshold
        self.tolerance = int(pointing_tolerance)
        self.box_hits = np.zeros(len(t), np.int64)  # largest region IoU >= 0.5, per threshold
        self.v2_hits = np.zeros((len(IOU_V2), len(t)), np.int64)
        self.gt_known = self.top1 = self.with_class = self.pointing = self.n = 0
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        self.workers = workers
        self._pool: Optional[ProcessPoolExecutor] = None

    def update(self, maps: Any, gt_boxes: Sequence[Any], correct: Any = None,
               image_size: Optional[Sequence[int]] = None) -> None:
        """``maps`` [B, h, w] raw score maps; ``gt_boxes`` B arrays [K_i, 4] in the evaluated image's pixels;
        ``correct`` [B] bool (top-1 class right; None: top-1 loc is not reported); ``image_size`` (H, W) of the
        evaluated images (None: the maps' own size)."""
        b = len(gt_boxes)
        shape = tuple(torch.as_tensor(maps).shape)
        if len(shape) != 3 or shape[0] != b:
            raise ValueError(f"maps must be [B, h, w] with B = len(gt_boxes) = {b}, got shape {shape}")
        size = tuple(int(s) for s in (image_size if image_size is not None else shape[1:]))
        if correct is not None:
            correct = torch.as_tensor(correct).detach().cpu().numpy().astype(bool).reshape(-1)
            if correct.shape != (b,):
                raise ValueError(f"correct must be [{b}] bool, got shape {correct.shape}")
            self.with_class += b
        boxes = [np.asarray(gt, np.int64).reshape(-1, 4) for gt in gt_boxes]
        for i, gt in enumerate(boxes):  # checked before anything is counted: a refused batch leaves no trace
            if not len(gt):
                raise ValueError(f"gt_boxes[{i}] is empty: every evaluated image needs a ground-truth box")
        norm = normalize_maps(maps, size)
        for i, (m, gt, (single, multi)) in enumerate(zip(norm, boxes, self._box_search(norm, boxes))):
            self.box_hits += single[:-1] >= 0.5
            for j, delta in enumerate(IOU_V2):
                self.v2_hits[j] += multi[:-1] >= delta
            self.gt_known += bool(single[-1] >= 0.5)
            if correct is not None:
                self.top1 += bool(single[-1] >= 0.5 and correct[i])
            y, x = np.unravel_index(np.argmax(m), m.shape)
            r = self.tolerance
            self.pointing += bool(((gt[:, 0] - r <= x) & (x <= gt[:, 2] + r)
                                   & (gt[:, 1] - r <= y) & (y <= gt[:, 3] + r)).any())
        self.n += b

    def _box_search(self, maps: np.ndarray, boxes: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        jobs = [(m, gt, self.thresholds) for m, gt in zip(maps, boxes)]
        if self.workers <= 1 or len(jobs) < 2:
            return [best_ious(*job) for job in jobs]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return list(self._pool.map(_best_ious_job, jobs, chunksize=max(1, len(jobs) // (4 * self.workers))))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def compute(self) -> dict[str, Any]:
        self.close()
        if not self.n:
            raise ValueError("no images were added: nothing to score")
        acc = self.box_hits / self.n
        v2 = self.v2_hits / self.n
        out = {"pointing_game": self.pointing / self.n, "gt_known_loc": self.gt_known / self.n,
               "maxboxacc": float(acc.max()), "best_threshold": float(self.thresholds[int(acc.argmax())])}
        if self.with_class == self.n:  # top-1 loc only where every batch said whether its class was right
            out["top1_loc"] = self.top1 / self.n
        out.update({f"maxboxacc_v2_iou{round(d * 100)}": float(v.max()) for d, v in zip(IOU_V2, v2)})
        out["maxboxacc_v2"] = float(np.mean(v2.max(1)))
        out["n"] = self.n
        return out
