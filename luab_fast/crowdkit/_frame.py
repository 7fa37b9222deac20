"""What every crowd-kit-compatible class of luab_fast.crowdkit shares: its exceptions, reading the input frame as
crowd-kit does, encoding it once to dense ids for the C++ engines, and building the fitted attributes with
crowd-kit's names, dtypes, index and column names (crowd-kit 1.4.2, pandas 3).

A class's ``fit`` reads, in this order::

    frame = select_columns(data)                   # crowd-kit's data[["task", "worker", "label"]]: KeyError
    if frame.empty: ...                            # crowd-kit's empty results (each class its own)
    crowd = encode(frame, tasks="first", workers="first", labels="first")   # the orders of crowd-kit's outputs
    ... = C.aggregate.<engine>(*crowd.arrays(), ..., n_threads=threads(self.n_threads))
    self._set_fitted(labels_=labels_series(codes, crowd.tasks, crowd.classes), probas_=Lazy("_build_probas"))

GLAD, MACE, KOS and MMSR follow crowd-kit's own order of checks instead (which column it reads first, what it
raises where), so they call ``missing_columns`` and ``factorize`` column by column, with their own wording
(``owner``); the encoding and the results are the same functions.

Orders: crowd-kit's outputs list tasks, workers and labels either by first appearance (``groupby(sort=False)``,
``value_counts().unstack()``, ``pd.unique``) or sorted (``groupby(sort=True)``); ``encode`` gives the dense ids in
the order a class's outputs use, so the engines' rows and columns come out in crowd-kit's order, and ties that
crowd-kit breaks by column order (``idxmax``) break the same way when the engine takes the first maximum.

Ids crowd-kit cannot group (NaN or None in task, worker or label) are refused with a ValueError naming the column:
crowd-kit drops such rows in some steps and not in others.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from .. import _ext
from ..aggregate import _checks
from ..aggregate._input import COLUMNS, _compiled_factorize, _factorize

ORDERS = ("first", "sorted")


# -- exceptions: crowd-kit's type in each situation, and a ValueError with a message ----------------------------
class _SentenceKeyError(KeyError):
    """A KeyError whose str() is its message (KeyError's own quotes it, as it would a missing key)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EmptyCrowdError(ValueError, ZeroDivisionError):
    """Fitting data without labels where crowd-kit divides by zero (GLAD, MACE), so this is a ZeroDivisionError
    too."""


class MissingColumnsError(ValueError, _SentenceKeyError, AttributeError):
    """data lacks task, worker or label where crowd-kit raises KeyError or AttributeError (by column: GLAD, KOS)."""


class KOSZeroScoreError(ValueError, _SentenceKeyError):
    """A task's final KOS sum is 0 (or NaN): np.sign gives no label, and crowd-kit raises KeyError."""


class SingleLabelError(ValueError, ZeroDivisionError):
    """Every answer is the same label: M-MSR divides by K − 1 = 0, and crowd-kit raises ZeroDivisionError."""


class NotFittedError(ValueError, AttributeError):
    """predict before fit: what crowd-kit's check_is_fitted raises (scikit-learn's NotFittedError is a ValueError
    and an AttributeError too; crowd-kit 1.4.2 under scikit-learn >= 1.6 raises an AttributeError about
    __sklearn_tags__ instead, for fitted models as well)."""


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


def missing_columns(data: pd.DataFrame, columns: Iterable[str] = COLUMNS) -> list[str]:
    """The ``columns`` that ``data`` lacks, in that order (for the classes that raise their own error there)."""
    return [c for c in columns if c not in data.columns]


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


def refuse_missing(codes: np.ndarray, name: str, owner: str | None = None, why: str = "") -> None:
    """NaN or None in a column (pandas' code -1) raise a ValueError naming the column and its first rows: in the
    shared wording, or ``"{owner}: column 'task' has missing values ...; {why}drop or recode them first"``."""
    missing = codes < 0
    if not missing.any():
        return
    rows = np.flatnonzero(missing)[:5].tolist()
    if owner is None:
        raise ValueError(f"{name} must not contain NaN or None (crowd-kit drops such rows in some steps and not in "
                         f"others), found at rows {rows}")
    raise ValueError(f"{owner}: column {name!r} has missing values (NaN/None) at rows {rows}; {why}drop or recode "
                     "them first")


def factorize(values: pd.Series, order: str, name: str, owner: str | None = None,
              why: str = "") -> tuple[np.ndarray, pd.Index]:
    """Dense int64 codes of a column and its distinct values (an Index of the column's dtype, named ``name``), by
    first appearance (``order="first"``) or sorted (``"sorted"``, groupby's order). Integer ids in a compact range
    take the compiled table (~4x faster than pandas' hash). NaN or None: ``refuse_missing(..., owner, why)``."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    codes, uniques = _factorize(values, sort=order == "sorted")
    refuse_missing(codes, name, owner, why)
    return np.ascontiguousarray(codes), uniques.rename(name)


def encode(frame: pd.DataFrame, tasks: str = "first", workers: str = "first", labels: str = "first",
           owner: str | None = None, n_threads: int | None = None) -> EncodedCrowd:
    """Encodes the three columns once; each id list in the order given ("first" appearance or "sorted"). Large
    frames encode their columns on two threads (the compiled table releases the GIL) unless ``n_threads`` is 1:
    at 500k labels encoding was a quarter of a vote's time."""
    jobs = [(frame["task"], tasks, "task"), (frame["worker"], workers, "worker"), (frame["label"], labels, "label")]
    compiled = _compiled_columns(jobs, n_threads) if len(frame) >= _PARALLEL_ENCODE_ROWS else [None] * 3
    out = [factorize(*job, owner) if done is None else done for job, done in zip(jobs, compiled)]
    (task, task_ids), (worker, worker_ids), (label, classes) = out
    return EncodedCrowd(task, worker, label, task_ids, worker_ids, classes)


_PARALLEL_ENCODE_ROWS = 100_000  # below this, a column a thread costs more than it saves


def _compiled_columns(jobs: list, n_threads: int | None) -> list:
    """The integer columns' (codes, ids) from one compiled call, a column a thread; None for a column it leaves to
    ``factorize`` (not integers, or ids too spread out for a direct table)."""
    for _, order, _ in jobs:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    fits = [_ext_fits(values.dtype) for values, _, _ in jobs]
    if _ext._C is None or not any(fits):
        return [None] * len(jobs)
    cols = [np.ascontiguousarray(values.to_numpy(np.int64)) for (values, _, _), ok in zip(jobs, fits) if ok]
    done = iter(_ext._C.aggregate.factorize_integer_columns(
        cols, [order == "sorted" for (_, order, _), ok in zip(jobs, fits) if ok], n_threads=threads(n_threads)))
    out = []
    for (values, _, name), ok in zip(jobs, fits):
        res = next(done) if ok else None
        out.append(None if res is None else (res[0], pd.Index(res[1].astype(values.dtype, copy=False), name=name)))
    return out


def _ext_fits(dtype) -> bool:
    """Whether the compiled direct table takes a column of this dtype (as ``_compiled_factorize`` decides)."""
    return isinstance(dtype, np.dtype) and dtype.kind in "iu" and not (dtype.kind == "u" and dtype.itemsize > 4)


def first_appearance_order(frame: pd.DataFrame, classes: pd.Index) -> np.ndarray:
    """The dense class ids (positions in ``classes``) in order of first appearance in the label column: the column
    order of crowd-kit's unweighted majority vote, by which its idxmax breaks ties."""
    return np.ascontiguousarray(classes.get_indexer(pd.unique(frame["label"])), dtype=np.int64)


def threads(n_threads: int | None) -> int:
    """The engines' n_threads: None is OpenMP's default (0), else 1..MAX_THREADS; ValueError otherwise."""
    return _checks.n_threads(n_threads)


def random_generator(seed: Any, refusal: str) -> np.random.RandomState | np.random.Generator:
    """The generator scipy's ``rvs(random_state=seed)`` draws from (scipy's check_random_state): numpy's global
    one for None, a fresh RandomState for an int, a RandomState or Generator itself; else ValueError(``refusal``,
    formatted with ``seed``)."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, (numbers.Integral, np.integer)):
        return np.random.RandomState(seed)
    if isinstance(seed, (np.random.RandomState, np.random.Generator)):
        return seed
    raise ValueError(refusal.format(seed=seed))


# -- building the fitted attributes --------------------------------------------------------------------------
def labels_series(codes: np.ndarray, tasks: pd.Index, classes: Any) -> pd.Series:
    """crowd-kit's ``labels_``: the class of each task (``classes.take(codes)``, with the label column's dtype),
    named "agg_label", indexed by ``tasks`` (named "task", in the order of ``codes``)."""
    return pd.Series(classes.take(codes), index=tasks, name="agg_label")


def empty_labels() -> pd.Series:
    """crowd-kit's ``labels_`` of a frame without rows (an empty groupby's idxmax): object dtype, "agg_label"."""
    return pd.Series([], dtype="O", name="agg_label")


def probas_frame(post: np.ndarray, tasks: pd.Index, classes: pd.Index) -> pd.DataFrame:
    """crowd-kit's ``probas_`` (or ``scores_``): [tasks, classes] float64, index ``tasks`` (named "task"), columns
    ``classes``. Wraps ``post`` without a copy (it must not be shared)."""
    return pd.DataFrame(post, index=tasks, columns=classes, copy=False)


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
    fast = _compiled_factorize(pd.Series(key), sort=False)
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
