"""Turns crowd labels (a DataFrame with any hashable ids, or three integer arrays) into dense int64
indices, once, with every check at this boundary so the C++ engine only ever sees valid input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import _ext
from . import _checks

COLUMNS = ("task", "worker", "label")
DUPLICATE_POLICIES = ("keep", "first", "last", "raise")


@dataclass
class Encoded:
    """Dense view of a crowd: ids are positions in ``task_ids`` / ``worker_ids`` / ``classes``."""

    task: np.ndarray  # int64 [N]
    worker: np.ndarray  # int64 [N]
    label: np.ndarray  # int64 [N]
    task_ids: pd.Index  # original task id of each dense task
    worker_ids: pd.Index
    classes: pd.Index
    from_frame: bool

    @property
    def n_tasks(self) -> int:
        return len(self.task_ids)

    @property
    def n_workers(self) -> int:
        return len(self.worker_ids)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_labels(self) -> int:
        return int(self.task.shape[0])


def _first_bad(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)
    more = f" (and {idx.size - 5} more)" if idx.size > 5 else ""
    return f"{idx[:5].tolist()}{more}"


def _int_column(values: np.ndarray, name: str) -> np.ndarray:
    """Checks a label/id column of an array input: 1-D integers (or integral floats), no NaN."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name} must not contain NaN or inf, found at positions {_first_bad(bad)}")
        if (arr != np.round(arr)).any():
            raise ValueError(f"{name} must hold integers, got non-integral {arr.dtype} values")
    elif arr.dtype.kind not in "iu":  # bool too: True/False are not ids or class indices
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    out = arr.astype(np.int64, copy=False)
    neg = out < 0
    if neg.any():
        raise ValueError(f"{name} must be >= 0, got negative values at positions {_first_bad(neg)}")
    return np.ascontiguousarray(out)


def _compiled_factorize(values: pd.Series, sort: bool) -> tuple[np.ndarray, pd.Index] | None:
    """``(codes, uniques)`` from the compiled direct-address table, for integer ids in a compact range (the
    usual case, and ~4× faster than pandas' hash at 500k labels); None where that does not apply. Uniques keep
    the column's dtype, as pandas' would. A column of a strided frame (``df.iloc[::3]``) is copied to the
    contiguous array the table reads."""
    dtype = values.dtype
    if _ext._C is None or not isinstance(dtype, np.dtype) or dtype.kind not in "iu" or \
            (dtype.kind == "u" and dtype.itemsize > 4):
        return None
    out = _ext._C.aggregate.factorize_integers(np.ascontiguousarray(values.to_numpy(np.int64)), sort)
    if out is None:
        return None
    codes, uniques = out
    return codes, pd.Index(uniques.astype(dtype, copy=False))


def _factorize(values: pd.Series, sort: bool = False) -> tuple[np.ndarray, pd.Index]:
    """Dense int64 codes and the distinct values: in order of first appearance (pandas.factorize(sort=False),
    crowd-kit's task order) or sorted (``sort=True``, groupby's order). NaN/None get code -1 (pandas' sentinel):
    callers refuse them."""
    fast = _compiled_factorize(values, sort=sort)
    if fast is not None:
        return fast
    codes, uniques = pd.factorize(values, sort=sort)
    return codes.astype(np.int64, copy=False), pd.Index(uniques)


def _sorted_unique(values: pd.Series) -> pd.Index:
    uniques = pd.unique(values)
    try:
        return pd.Index(np.sort(uniques), name="label") if uniques.dtype != object else pd.Index(
            sorted(uniques), name="label")
    except TypeError:  # labels of mixed, unorderable types: keep first appearance
        return pd.Index(uniques, name="label")


def _encode_frame(df: pd.DataFrame, n_classes: int | None) -> Encoded:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"data must have columns {list(COLUMNS)}, missing {missing} (got {list(df.columns)})")
    twice = [] if df.columns.is_unique else [c for c in COLUMNS if int((df.columns == c).sum()) > 1]
    if twice:  # df[col] would be a frame, and which copy counts a guess
        raise ValueError(f"data must have one column each of {list(COLUMNS)}, got {twice} more than once")
    if len(df) == 0:
        raise ValueError("data is empty: at least one (task, worker, label) row is needed")
    for col in COLUMNS:
        dtype = df[col].dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "iub":  # cannot hold NaN: skip the scan (hot path)
            continue
        na = df[col].isna().to_numpy()
        if na.any():
            raise ValueError(f"{col} must not contain NaN/None, found at rows {_first_bad(na)}")
    # factorize in order of first appearance, as crowd-kit's groupby(sort=False) orders tasks
    task, task_ids = _factorize(df["task"])
    worker, worker_ids = _factorize(df["worker"])
    labels = df["label"]
    if n_classes is not None:
        lab = _int_column(labels.to_numpy(), "label")
        if (lab >= n_classes).any():
            raise ValueError(f"label must be < n_classes={n_classes}, got values up to {int(lab.max())} "
                             f"at rows {_first_bad(lab >= n_classes)}")
        classes = pd.RangeIndex(n_classes, name="label")
        label = lab
    else:
        fast = _compiled_factorize(labels, sort=True)
        if fast is not None:
            label, classes = fast
        else:
            classes = _sorted_unique(labels)
            label = classes.get_indexer(labels)
    return Encoded(task=task, worker=worker, label=np.asarray(label, np.int64),
                   task_ids=pd.Index(task_ids, name="task"), worker_ids=pd.Index(worker_ids, name="worker"),
                   classes=pd.Index(classes, name="label"), from_frame=True)


def _encode_arrays(arrays: Sequence[Any], n_classes: int | None, n_tasks: int | None,
                   n_workers: int | None) -> Encoded:
    if len(arrays) != 3:
        raise ValueError(f"array input must be (task, worker, label), got {len(arrays)} arrays")
    task, worker, label = (_int_column(a, n) for a, n in zip(arrays, COLUMNS))
    if not (task.shape == worker.shape == label.shape):
        raise ValueError(f"task, worker and label must have the same length, got {task.shape[0]}, "
                         f"{worker.shape[0]} and {label.shape[0]}")
    if task.shape[0] == 0:
        raise ValueError("data is empty: at least one (task, worker, label) triple is needed")

    def size(given: int | None, col: np.ndarray, name: str, col_name: str) -> int:
        need = int(col.max()) + 1
        if given is None:
            return need
        if given < need:
            raise ValueError(f"{col_name} must be < {name}={given}, got values up to {need - 1}")
        return int(given)

    K = size(n_classes, label, "n_classes", "label")
    T = size(n_tasks, task, "n_tasks", "task")
    W = size(n_workers, worker, "n_workers", "worker")
    return Encoded(task=task, worker=worker, label=label, task_ids=pd.RangeIndex(T, name="task"),
                   worker_ids=pd.RangeIndex(W, name="worker"), classes=pd.RangeIndex(K, name="label"),
                   from_frame=False)


def encode(data: Any, n_classes: int | None = None, n_tasks: int | None = None, n_workers: int | None = None,
           on_duplicate: str = "keep") -> Encoded:
    """Validates and encodes ``data``: a DataFrame with columns task, worker, label, or a tuple of three
    integer arrays (ids already dense: results are indexed 0..n_tasks-1, unlabelled tasks included)."""
    if n_classes is not None:
        _checks.integer(n_classes, "n_classes", 1)
    for name, given in (("n_tasks", n_tasks), ("n_workers", n_workers)):
        if given is not None:
            _checks.integer(given, name, 1)
    if not isinstance(on_duplicate, str) or on_duplicate not in DUPLICATE_POLICIES:
        raise ValueError(f"on_duplicate must be one of {DUPLICATE_POLICIES}, got {on_duplicate!r}")
    if isinstance(data, pd.DataFrame):
        if n_tasks is not None or n_workers is not None:
            raise ValueError("n_tasks/n_workers apply to array input only; a DataFrame's ids are factorized")
        enc = _encode_frame(data, n_classes)
    elif isinstance(data, (tuple, list)):
        enc = _encode_arrays(data, n_classes, n_tasks, n_workers)
    else:
        raise ValueError(f"data must be a pandas DataFrame (task, worker, label) or a tuple of three integer "
                         f"arrays, got {type(data).__name__}")
    return apply_duplicate_policy(enc, on_duplicate)


def apply_duplicate_policy(enc: Encoded, policy: str) -> Encoded:
    """Several labels from one worker on one task: 'keep' counts each as a vote (crowd-kit's behaviour),
    'first'/'last' keep one, 'raise' refuses."""
    if policy == "keep":
        return enc
    key = enc.task * max(enc.n_workers, 1) + enc.worker
    order = np.arange(key.size) if policy != "last" else np.arange(key.size)[::-1]
    _, first_pos = np.unique(key[order], return_index=True)
    keep = np.sort(order[first_pos])
    if keep.size == key.size:
        return enc
    if policy == "raise":
        dup = np.ones(key.size, bool)
        dup[keep] = False
        raise ValueError(f"data has {key.size - keep.size} duplicate (task, worker) pairs, e.g. at rows "
                         f"{_first_bad(dup)}; pass on_duplicate='keep', 'first' or 'last'")
    return Encoded(task=enc.task[keep], worker=enc.worker[keep], label=enc.label[keep], task_ids=enc.task_ids,
                   worker_ids=enc.worker_ids, classes=enc.classes, from_frame=enc.from_frame)


def extend(prev: Encoded, new: pd.DataFrame | Sequence[Any], on_duplicate: str) -> Encoded:
    """Appends new labels to a previous encoding (for warm-started refits). Task and worker ids keep
    their dense positions; new ids are appended. Classes are fixed by the first fit."""
    if prev.from_frame:
        if not isinstance(new, pd.DataFrame):
            raise ValueError("partial_fit data must be a DataFrame, as the first fit was")
        part = _encode_frame(new, prev.n_classes if isinstance(prev.classes, pd.RangeIndex) else None)
        lab = prev.classes.get_indexer(part.classes[part.label])
        if (lab < 0).any():
            unknown = pd.unique(part.classes[part.label][lab < 0])[:5].tolist()
            raise ValueError(f"label values {unknown} were not seen in the first fit (classes are fixed then; "
                             f"pass n_classes to fit to fix them up front)")
        task_ids = prev.task_ids.append(part.task_ids.difference(prev.task_ids, sort=False))
        worker_ids = prev.worker_ids.append(part.worker_ids.difference(prev.worker_ids, sort=False))
        task = task_ids.get_indexer(part.task_ids[part.task])
        worker = worker_ids.get_indexer(part.worker_ids[part.worker])
        task_ids.name, worker_ids.name = "task", "worker"
    else:
        if not isinstance(new, (tuple, list)):
            raise ValueError("partial_fit data must be a (task, worker, label) tuple, as the first fit was")
        part = _encode_arrays(new, prev.n_classes, None, None)
        if part.n_classes > prev.n_classes:
            raise ValueError(f"label must be < n_classes={prev.n_classes}, got {part.n_classes - 1}")
        task, worker, lab = part.task, part.worker, part.label
        task_ids = pd.RangeIndex(max(prev.n_tasks, part.n_tasks), name="task")
        worker_ids = pd.RangeIndex(max(prev.n_workers, part.n_workers), name="worker")
    merged = Encoded(task=np.concatenate([prev.task, np.asarray(task, np.int64)]),
                     worker=np.concatenate([prev.worker, np.asarray(worker, np.int64)]),
                     label=np.concatenate([prev.label, np.asarray(lab, np.int64)]), task_ids=task_ids,
                     worker_ids=worker_ids, classes=prev.classes, from_frame=prev.from_frame)
    return apply_duplicate_policy(merged, on_duplicate)
