"""SI-Score (Djolonga et al., "On Robustness and Transferability of Convolutional Neural Networks", CVPR 2021;
data and code: google-research/si-score): accuracy as object size, location or rotation varies.

Layout (the release, ``aws s3 cp s3://si-score-dataset/object_{size|location|rotation}/``): ``ROOT/test/`` (or
``ROOT`` itself) holds ``<label>/<image_id>.jpg`` (one folder per foreground label, e.g. ``bell pepper``),
``metadata.csv`` (columns ``image_id, x_coord, y_coord, area, rotation, foreground_class, ...``, written by
``dataset_generator.py``) and ``foreground_classes.csv`` (rows ``imagenet_class, label``, read positionally after a
header row, as their ``analysis_demo.ipynb`` reads it).

Protocol (``analysis_demo.ipynb``): an image's label is the ImageNet class of its folder; top-1 / top-5 per image;
per factor value the mean over the images with that value (``calculate_group_top1_top5_accuracies``): ``area``
for object size, (``x_coord``, ``y_coord``) for location, ``rotation`` for rotation. ``top1`` is the mean over
all images (what a single table entry such as "SI-size" reports), ``top1_group_mean`` the mean over the groups.

How to call::

    si = read_si_score(ROOT, "object_size")      # files, labels (ImageNet index), group value per file
    metrics = si_score_accuracy(logits, si)       # logits [N, 1000] numpy/torch, ImageNet-1k order
    # -> {"top1", "top5", "top1_group_mean", "top1/<group>": fractions in [0, 1], "n": images}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._cli import DataError
from ._kind_files import as_scores, images_in, subfolders

FACTORS = {"object_size": ("area",), "object_location": ("x_coord", "y_coord"), "object_rotation": ("rotation",)}
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class SIScore:
    factor: str
    files: tuple[str, ...]
    labels: np.ndarray  # int64 [N]: ImageNet-1k class index
    groups: tuple[str, ...]  # the factor's value per file, e.g. "area=0.2" or "x_coord=0.1,y_coord=0.5"


def _csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"si-score: {path} is missing")
    try:
        return pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"si-score: {path} cannot be read as CSV ({exc})") from None


def read_si_score(root: str | Path, factor: str) -> SIScore:
    """The images of one SI-Score dataset (``factor``: object_size, object_location or object_rotation) with their
    ImageNet labels and factor values; DataError naming the file for a missing or malformed CSV, a label folder
    without an ImageNet class or an image without a metadata row."""
    if factor not in FACTORS:
        raise ValueError(f"factor must be one of {tuple(FACTORS)}, got {factor!r}")
    root = Path(root)
    base = root / "test" if (root / "test").is_dir() else root
    classes = _csv(base / "foreground_classes.csv")
    if classes.shape[1] < 2:
        raise DataError(f"si-score: {base / 'foreground_classes.csv'} must have two columns (imagenet_class, "
                        f"label), got {list(classes.columns)}")
    try:
        imagenet = {str(label): int(cls) for cls, label in zip(classes.iloc[:, 0], classes.iloc[:, 1])}
    except (TypeError, ValueError):
        raise DataError(f"si-score: {base / 'foreground_classes.csv'}: the first column must be ImageNet class "
                        f"indices") from None
    if any(not 0 <= v < IMAGENET_CLASSES for v in imagenet.values()):
        raise DataError(f"si-score: {base / 'foreground_classes.csv'}: ImageNet classes must be 0..999")
    meta = _csv(base / "metadata.csv")
    columns = FACTORS[factor]
    missing = [c for c in ("image_id", *columns) if c not in meta.columns]
    if missing:
        raise DataError(f"si-score: {base / 'metadata.csv'} lacks column(s) {missing}")
    group_of = {str(i): ",".join(f"{c}={v}" for c, v in zip(columns, vals))
                for i, *vals in zip(meta["image_id"], *(meta[c] for c in columns))}
    files, labels, groups = [], [], []
    for d in subfolders(base):
        found = images_in(d)
        if not found:
            continue
        if d.name not in imagenet:
            raise DataError(f"si-score: folder {d} is not a label of {base / 'foreground_classes.csv'}")
        for f in found:
            stem = Path(f).stem
            if stem not in group_of:
                raise DataError(f"si-score: image {f} has no row in {base / 'metadata.csv'}")
            files.append(f)
            labels.append(imagenet[d.name])
            groups.append(group_of[stem])
    if not files:
        raise DataError(f"si-score: {base} holds no images in label folders (expected {base}/<label>/<id>.jpg)")
    return SIScore(factor, tuple(files), np.asarray(labels, np.int64), tuple(groups))


def si_score_accuracy(logits: Any, si: SIScore) -> dict[str, Any]:
    """Top-1 / top-5 over all images, top-1 per factor value and its mean over the values (rows of ``logits``
    [N, 1000] in ``si.files`` order)."""
    scores = as_scores(logits, "logits", IMAGENET_CLASSES)
    if len(scores) != len(si.labels):
        raise ValueError(f"logits has {len(scores)} rows for {len(si.labels)} images")
    top5 = np.argpartition(-scores, 4, axis=1)[:, :5]
    hit1 = scores.argmax(1) == si.labels
    frame = pd.DataFrame({"group": si.groups, "hit": hit1})
    per_group = frame.groupby("group", sort=True)["hit"].mean()
    out = {"top1": float(hit1.mean()), "top5": float((top5 == si.labels[:, None]).any(1).mean()),
           "top1_group_mean": float(per_group.mean())}
    out.update({f"top1/{g}": float(v) for g, v in per_group.items()})
    out["n"] = int(len(hit1))
    return out
