"""What every crowd-kit-compatible class of luab_fast.crowdkit shares: reading the input frame as crowd-kit does,
encoding it once to dense ids for the C++ engines, and building the fitted attributes with crowd-kit's names,
dtypes, index and column names (crowd-kit 1.4.2, pandas 3).

A class's ``fit`` reads, in this order::

    frame = select_columns(data)                   # crowd-kit's data[["task", "worker", "label"]]: KeyError
    if frame.empty: ...                            # crowd-kit's empty results (each class its own)
    crowd = encode(frame, tasks="first", workers="first", labels="first")   # the orders of crowd-kit's outputs
    ... = C.aggregate.<engine>(*crowd.arrays(), ..., n_threads=threads(self.n_threads))
    self._set_fitted(labels_=labels_series(codes, crowd), probas_=Lazy("_build_probas"), ...)

Orders: crowd-kit's outputs list tasks, workers and labels either by first appearance (``groupby(sort=False)``,
``value_counts().unstack()``, ``pd.unique``) or sorted (``groupby(sort=True)``); ``encode`` gives the dense ids in
the order a class's outputs use, so the engines' rows and columns come out in crowd-kit's order, and ties that
crowd-kit breaks by column order (``idxmax``) break the same way when the engine takes the first maximum.

Ids crowd-kit cannot group (NaN or None in task, worker or label) are refused with a ValueError naming the column:
crowd-kit drops such rows in some steps and not in others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from .. import _ext
from ..aggregate import _checks

COLUMNS = ("task", "worker", "label")
ORDERS = ("first", "sorted")


# -- reading the input ---------------------------------------------------------------------------------------
def select_columns(data: Any) -> pd.DataFrame:
    """crowd-kit's first step, ``data[["task", "worker", "label"]]``: a missing column raises pandas' KeyError
    (``"['label'] not in index"``), as in every crowd-kit classifier. A complete frame is not copied."""
    if not isinstance(data, pd.DataFrame) or any(c not in data.columns for c in COLUMNS):
        data = data[list(COLUMNS)]  # the exception crowd-kit raises, from the same call
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame with columns {list(COLUMNS)}, got {type(data).__name__}")
    if not data.columns.is_unique and any(int((data.columns == c).sum()) > 1 for c in COLUMNS):
        raise ValueError(f"data must have one column each of {list(COLUMNS)}; some appear more than once")
    return data


@dataclass(frozen=True, eq=False)
class EncodedCrowd:
    """The crowd as dense int64 ids (positions in ``tasks`` / ``workers`` / ``classes``), one per answer."""

    task: np.ndarray  # int64 [N]
    worker: np.ndarray  # int64 [N]
    label: np.ndarray  # int64 [N]
    tasks: pd.Index  # the task id of each dense task, named "task", in the order asked for
    workers: pd.Index  # named "worker"
    classes: pd.Index  # named "label"

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_workers(self) -> int:
        return len(self.workers)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, int]:
        """The engines' first six arguments: (task, worker, label, n_tasks, n_workers, n_classes)."""
        return self.task, self.worker, self.label, self.n_tasks, self.n_workers, self.n_classes


def _compiled_codes(values: pd.Series, sort: bool) -> tuple[np.ndarray, pd.Index] | None:
    """(codes, uniques) from the compiled direct-address table for integer ids in a compact range (the usual case,
    ~4x faster than pandas' hash); None where that does not apply. Uniques keep the column's dtype."""
    dtype = values.dtype
    if _ext._C is None or not isinstance(dtype, np.dtype) or dtype.kind not in "iu" or \
            (dtype.kind == "u" and dtype.itemsize > 4):
        return None
    out = _ext._C.aggregate.factorize_integers(values.to_numpy(np.int64), sort)
    if out is None:
        return None
    codes, uniques = out
    return codes, pd.Index(uniques.astype(dtype, copy=False))


def factorize(values: pd.Series, order: str, name: str) -> tuple[np.ndarray, pd.Index]:
    """Dense int64 codes of a column and its distinct values (an Index of the column's dtype, named ``name``), by
    first appearance (``order="first"``) or sorted (``"sorted"``, groupby's order)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    fast = _compiled_codes(values, order == "sorted")
    if fast is not None:
        codes, uniques = fast
    else:
        codes, uniques = pd.factorize(values, sort=order == "sorted")
        codes = codes.astype(np.int64, copy=False)
        if (codes < 0).any():
            rows = np.flatnonzero(codes < 0)[:5].tolist()
            raise ValueError(f"{name} must not contain NaN or None (crowd-kit drops such rows in some steps and not "
                             f"in others), found at rows {rows}")
        uniques = pd.Index(uniques)
    return np.ascontiguousarray(codes), uniques.rename(name)


def encode(frame: pd.DataFrame, tasks: str = "first", workers: str = "first", labels: str = "first") -> EncodedCrowd:
    """Encodes the three columns once; each id list in the order given ("first" appearance or "sorted")."""
    task, task_ids = factorize(frame["task"], tasks, "task")
    worker, worker_ids = factorize(frame["worker"], workers, "worker")
    label, classes = factorize(frame["label"], labels, "label")
    return EncodedCrowd(task, worker, label, task_ids, worker_ids, classes)


def first_appearance_order(frame: pd.DataFrame, classes: pd.Index) -> np.ndarray:
    """The dense class ids (positions in ``classes``) in order of first appearance in the label column: the column
    order of crowd-kit's unweighted majority vote, by which its idxmax breaks ties."""
    return np.ascontiguousarray(classes.get_indexer(pd.unique(frame["label"])), dtype=np.int64)


def threads(n_threads: int | None) -> int:
    """The engines' n_threads: None is OpenMP's default (0), else 1..MAX_THREADS; ValueError otherwise."""
    return _checks.n_threads(n_threads)


# -- building the fitted attributes --------------------------------------------------------------------------
def labels_series(codes: np.ndarray, crowd: EncodedCrowd) -> pd.Series:
    """crowd-kit's ``labels_``: the class of each task, named "agg_label", indexed by task (in ``crowd.tasks``'
    order), with the label column's dtype."""
    return pd.Series(crowd.classes.take(codes), index=crowd.tasks, name="agg_label")


def probas_frame(post: np.ndarray, crowd: EncodedCrowd) -> pd.DataFrame:
    """crowd-kit's ``probas_``: [tasks, classes] float64, index named "task", columns named "label". Wraps
    ``post`` without a copy (it must not be shared)."""
    return pd.DataFrame(post, index=crowd.tasks, columns=crowd.classes, copy=False)


def worker_series(values: np.ndarray, workers: pd.Index, name: str = "skill") -> pd.Series:
    """A per-worker attribute (``skills_``): float64, indexed by worker (named "worker")."""
    return pd.Series(np.asarray(values, dtype=np.float64), index=workers.rename("worker"), name=name)


def errors_columns(classes: pd.Index) -> pd.Index:
    """The columns of crowd-kit's ``errors_``: the classes without a name, with the dtype they take beside the
    frame's own column names (crowd-kit builds errors_ from data joined with probas_): object, or str for string
    labels."""
    return pd.Index(list(COLUMNS)).append(classes.rename(None))[len(COLUMNS):]


def observed_pairs(crowd: EncodedCrowd) -> tuple[np.ndarray, np.ndarray]:
    """The (worker, label) pairs that occur, as dense ids in order of first appearance: the rows of crowd-kit's
    ``errors_`` (``groupby(["worker", "label"], sort=False)``)."""
    key = crowd.worker * max(crowd.n_classes, 1) + crowd.label
    fast = _compiled_codes(pd.Series(key), sort=False)
    if fast is not None:
        pairs = fast[1].to_numpy(np.int64)
    else:
        pairs = pd.unique(key)
    return pairs // max(crowd.n_classes, 1), pairs % max(crowd.n_classes, 1)


def errors_frame(table: np.ndarray, crowd: EncodedCrowd) -> pd.DataFrame:
    """crowd-kit's ``errors_`` from ``table`` [W, observed label z, true label y]: a row per observed (worker, label)
    pair in order of first appearance (MultiIndex named worker, label), a column per true label."""
    w, z = observed_pairs(crowd)
    index = pd.MultiIndex.from_arrays([crowd.workers.take(w), crowd.classes.take(z)], names=["worker", "label"])
    return pd.DataFrame(table[w, z], index=index, columns=errors_columns(crowd.classes), copy=False)


def check_task_labels(codes: np.ndarray, n_undefined: int, what: str) -> None:
    """crowd-kit takes labels with ``idxmax``, which raises where a task's every share is NaN (its votes weigh 0 in
    total); the same ValueError here, at fit, naming how many tasks."""
    if n_undefined:
        tasks = np.flatnonzero(codes < 0)[:5].tolist()
        raise ValueError(f"{what}: {n_undefined} task(s) have votes of total weight 0, so every share is NaN and "
                         f"there is no most probable label (crowd-kit's idxmax raises too); dense tasks {tasks}")


# -- fitted attributes, set at fit, some built on first read ------------------------------------------------
class NotFittedError(ValueError, AttributeError):
    """predict before fit: what crowd-kit's check_is_fitted raises (scikit-learn's NotFittedError is a ValueError
    and an AttributeError too; crowd-kit 1.4.2 under scikit-learn >= 1.6 raises an AttributeError about
    __sklearn_tags__ instead, for fitted models as well)."""


@dataclass(frozen=True)
class Lazy:
    """A fitted attribute to build on first read, by the named method of the estimator (picklable, unlike a
    closure): for attributes that cost a pass over the data and that ``fit_predict`` does not return."""

    method: str


class FittedAttributes:
    """Mixin of the crowd-kit-compatible classes: fitted attributes are plain attributes once read, like crowd-kit's
    attrs fields; an attribute a fit has not set raises AttributeError, as crowd-kit's do before fit."""

    def _set_fitted(self, **values: Any) -> None:
        """Sets fitted attributes: a value as is, or ``Lazy("_method")`` to build on first read. Attributes a fit
        does not name keep what an earlier fit left, as crowd-kit's do."""
        pending: dict[str, str] = self.__dict__.setdefault("_pending", {})
        for name, value in values.items():
            if isinstance(value, Lazy):
                self.__dict__.pop(name, None)
                pending[name] = value.method
            else:
                pending.pop(name, None)
                self.__dict__[name] = value

    def __getattr__(self, name: str) -> Any:
        pending = self.__dict__.get("_pending")
        if pending is not None and name in pending:
            build: Callable[[], Any] = getattr(self, pending[name])
            value = build()
            del pending[name]
            self.__dict__[name] = value
            return value
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict[str, Any]:
        """The constructor's arguments (for repr and cloning), in its order."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_") and not k.endswith("_")}
