"""What a training run reads, set up before any model: the training data (``--data``, or the demo generated
on first use), its labels (raw crowd CSVs aggregated with Dawid-Skene first), the evaluation splits matched to
the training classes, and the boxes localisation is scored against."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from .. import _atomic
from .._cli import DataError
from ..data.source import list_images
from .config import TrainConfig


@dataclass(frozen=True)
class TrainData:
    train: Path  # ImageFolder directory or 'path label' list file
    val: dict[str, Path]  # evaluation splits by name
    byproducts: Any  # the byproduct store (path), or None: labels only
    labels: Optional[Path]  # --labels (aggregated if it was a crowd CSV), or None: the source's labels
    boxes: Optional[dict[str, np.ndarray]]  # stem → boxes [n, 4] the localisation is scored against
    ood_traces: Optional[Path] = None  # the demo's held-out ood traces: the attention figure's reference


def aggregate_crowd(csv: Path, out: Path, say) -> Path:
    """Dawid-Skene on a raw crowd CSV (task, worker, label) → ``task,label`` for the loader."""
    from ..aggregate import DawidSkene

    try:
        df = pd.read_csv(csv, dtype={"task": str, "worker": str})
        model = DawidSkene().fit(df)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:  # EmptyDataError is a ValueError
        raise DataError(f"--labels {csv} (crowd labels: task, worker, label): {exc}") from None
    labels = model.labels_
    with _atomic.atomic_path(out) as tmp:  # a killed run must not leave a half-written file to be reused
        pd.DataFrame({"task": labels.index.astype(str), "label": labels.to_numpy()}).to_csv(tmp, index=False)
    say(f"aggregated {len(df):,} crowd labels of {len(labels):,} images with Dawid-Skene → {out}")
    return out


def _val_splits(cfg: TrainConfig, val: dict[str, Path]) -> dict[str, Path]:
    """``--val-data`` NAME=DIR items (a bare DIR is named after its folder) added to ``val``."""
    val = dict(val)
    for item in cfg.val_data or []:
        name, _, path = item.partition("=")
        if not path:
            name, path = Path(item).name, item
        if not name:
            raise ValueError(f"--val-data {item!r}: empty split name; give NAME=DIR")
        if name in val:
            raise ValueError(f"--val-data: split name {name!r} given twice ({val[name]} and {path}); "
                             f"name each split NAME=DIR")
        if not Path(path).exists():
            raise ValueError(f"--val-data {name}={path}: {path} does not exist")
        val[name] = Path(path)
    return val


def eval_source(path: Path, split: str, classes: tuple[str, ...]):
    """The split's images labelled by the *training* classes, matched by name (an ImageFolder's folder names,
    a list file's label ids): a split holding a subset of the classes, or in another folder order, still scores
    right. A class training never saw is an error: no logit could be right for it."""
    images = list_images(path, min_classes=1)  # an evaluation split may hold one class
    if images.classes == classes:
        return path
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted(set(images.classes[k] for k in np.unique(images.labels)) - set(index))
    if unknown:
        raise DataError(f"--val-data {split}={path}: {len(unknown)} class(es) are not among the "
                        f"{len(classes)} training classes, e.g. {unknown[:5]}")
    return list(images.files), np.asarray([index[images.classes[k]] for k in images.labels], np.int64)


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _given_labels(cfg: TrainConfig, run_dir: Path, say, rank: int) -> Optional[Path]:
    """``--labels`` as given, or first aggregated with Dawid-Skene when it is a raw crowd CSV (a ``worker``
    column); rank 0 writes, the other ranks wait for it."""
    if not cfg.labels:
        return None
    labels = Path(cfg.labels)
    if not labels.is_file():
        raise ValueError(f"--labels {labels} " + ("is a directory, expected a CSV file" if labels.exists()
                                                  else "does not exist"))
    try:
        columns = pd.read_csv(labels, nrows=1).columns
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"--labels {labels}: not a readable CSV ({exc})") from None
    if "worker" not in columns:
        return labels
    out = run_dir / "aggregated_labels.csv"
    if rank == 0:
        aggregate_crowd(labels, out, say)
    _barrier()
    return out


def setup_data(cfg: TrainConfig, run_dir: Path, say, rank: int) -> TrainData:
    """``--data`` and its options checked and prepared (crowd labels aggregated), or the demo's own."""
    if cfg.data is None:
        from ..data.demo import ensure_demo

        t0 = time.perf_counter()
        paths = ensure_demo(cfg.demo_root, seed=0, size=cfg.demo_size)
        say(f"demo dataset ({cfg.demo_size}) at {paths.root} ({time.perf_counter() - t0:.1f} s)")
        manifest = json.loads(paths.manifest.read_text())
        canvas = float(manifest["canvas"])
        boxes = {it["stem"]: np.asarray(it["box"], np.float64) / canvas for it in manifest["images"]}
        labels = _given_labels(cfg, run_dir, say, rank)  # e.g. python -m luab_fast.annotate's on the demo
        if labels is None:  # the demo's crowd, aggregated afresh: the run directory may hold another demo's
            labels = run_dir / "aggregated_labels.csv"
            if rank == 0:
                aggregate_crowd(paths.labels, labels, say)
                truth = pd.read_csv(paths.truth, dtype={"task": str}).set_index("task")["label"]
                agg = pd.read_csv(labels, dtype={"task": str}).set_index("task")["label"]
                say(f"aggregated labels agree with the truth on {100 * (agg == truth.loc[agg.index]).mean():.2f}% "
                    "of the training images")
            _barrier()
        val = _val_splits(cfg, {"iid": paths.iid, "ood": paths.ood})
        return TrainData(train=paths.train, val=val, byproducts=cfg.byproducts or paths.store, labels=labels,
                         boxes=boxes, ood_traces=paths.ood_store)
    if not Path(cfg.data).exists():
        raise ValueError(f"--data {cfg.data} does not exist (expected an ImageFolder directory or a text file of "
                         f"'path label' lines)")
    val = _val_splits(cfg, {})
    labels = _given_labels(cfg, run_dir, say, rank)
    boxes = store_boxes(cfg.byproducts) if cfg.byproducts else None
    if boxes:
        say(f"{len(boxes):,} images of the byproduct store have ILSVRC boxes: localisation is scored on those")
    return TrainData(train=Path(cfg.data), val=val, byproducts=cfg.byproducts, labels=labels, boxes=boxes or None)


def store_boxes(path) -> dict[str, np.ndarray]:
    """stem → [n, 4] boxes normalised to the image, for the store's images that carry ILSVRC boxes and their
    size (ImageNet-AB's LOC subset): the evaluation scores the predicted point and heat-map peak against them
    on whatever split holds those images."""
    from ..byproducts import ByproductStore

    store = ByproductStore.open(path)
    off, sizes = np.asarray(store.arrays["box_offsets"]), np.asarray(store.arrays["size"], np.float64)
    ids = store.ids
    out = {}
    for i in np.flatnonzero((np.diff(off) > 0) & (sizes > 0).all(1)):
        w, h = sizes[i]
        out[str(ids[i])] = store.boxes(int(i)) / np.array([w, h, w, h])
    return out
