"""What every aggregator shares: crowd-kit's interface (fit / fit_predict / fit_predict_proba and the
fitted ``labels_``, ``probas_``, ``priors_``, ``errors_``), results indexed by the original ids, and the
raw numpy arrays for code that wants no pandas on the hot path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import _ext
from .._ext import require_ext
from . import _checks
from ._input import Encoded, encode, extend


class BaseAggregator:
    """Base class. Subclasses implement ``_run(enc, warm)`` and set ``posteriors_`` (ndarray [T, K])."""

    #: name used in error messages and the CLI
    name = "aggregator"

    def __init__(self, n_threads: int | None = None, on_duplicate: str = "keep") -> None:
        self.n_threads = n_threads
        self.on_duplicate = on_duplicate
        self._enc: Encoded | None = None
        self.posteriors_: np.ndarray | None = None
        self._cache: dict[str, Any] = {}

    # -- crowd-kit interface ---------------------------------------------------------------------------
    def fit(self, data: Any, n_classes: int | None = None, n_tasks: int | None = None,
            n_workers: int | None = None, **kwargs: Any) -> "BaseAggregator":
        """Fits on ``data``: a DataFrame with columns ``task, worker, label`` (any hashable ids), or a tuple
        ``(task, worker, label)`` of non-negative integer arrays (dense ids; results then cover tasks
        0..n_tasks-1, unlabelled ones included). ``n_classes`` fixes the classes to 0..n_classes-1."""
        enc = encode(data, n_classes=n_classes, n_tasks=n_tasks, n_workers=n_workers,
                     on_duplicate=self.on_duplicate)
        self._fit_encoded(enc, warm=None, **kwargs)
        return self

    def fit_predict(self, data: Any, **kwargs: Any) -> pd.Series:
        return self.fit(data, **kwargs).labels_

    def fit_predict_proba(self, data: Any, **kwargs: Any) -> pd.DataFrame:
        return self.fit(data, **kwargs).probas_

    # -- internals -------------------------------------------------------------------------------------
    def _threads(self) -> int:
        return _checks.n_threads(self.n_threads)

    #: float64 tables of [T, K] and [W, K, K] cells the engine holds at once (posteriors, warm start / prior)
    _task_tables, _worker_tables = 2, 0

    def _check_size(self, enc: Encoded) -> None:
        """Refuses a crowd whose tables cannot fit in memory (a label column of free text makes every answer
        a class), naming the sizes, before any allocation."""
        T, W, K = enc.n_tasks, enc.n_workers, enc.n_classes
        if K > _checks.MAX_CLASSES:
            given = "n_classes" if isinstance(enc.classes, pd.RangeIndex) else "label (distinct values)"
            raise ValueError(f"{given}: got {K:,} classes, the engine handles at most {_checks.MAX_CLASSES:,}; "
                             "map the labels to fewer classes")
        need = 8 * (self._task_tables * T * K + self._worker_tables * W * K * K)
        per_worker = " and workers × classes²" if self._worker_tables else ""
        _checks.check_fits(need, f"{T:,} tasks, {W:,} workers and {K:,} classes (distinct labels): "
                                 f"{type(self).__name__}'s tables (tasks × classes{per_worker}, float64)",
                           "map the labels to fewer classes (or pass fewer n_tasks)" + (
                               ", or use MajorityVote or OneCoinDawidSkene" if self._worker_tables else ""))

    def _fit_encoded(self, enc: Encoded, warm: np.ndarray | None, **kwargs: Any) -> None:
        self._threads()  # a bad n_threads is named before any work, and never reaches OpenMP
        self._check_size(enc)
        before = self._enc, self._cache
        self._cache = {}
        self._enc = enc
        try:
            self._run(enc, warm, **kwargs)
        except BaseException:
            # _run sets the fitted arrays only once the engine returns: a refused partial_fit / refit leaves
            # the previous fit whole (not new ids over old posteriors)
            self._enc, self._cache = before
            raise

    def _run(self, enc: Encoded, warm: np.ndarray | None, **kwargs: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def _check_fitted(self) -> Encoded:
        if self._enc is None or self.posteriors_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(data) first")
        return self._enc

    def _majority_vote(self, enc: Encoded, weights: np.ndarray | None = None) -> np.ndarray:
        C = require_ext(f"{type(self).__name__}.fit")
        return C.aggregate.majority_vote(enc.task, enc.worker, enc.label, enc.n_tasks, enc.n_workers,
                                         enc.n_classes, weights, self._threads())

    def _warm_start_posteriors(self, enc: Encoded) -> np.ndarray:
        """Previous posteriors for tasks seen before, majority vote for new ones."""
        prev = self._check_fitted()
        if enc.n_tasks == prev.n_tasks:  # no new task ids (array input with a fixed n_tasks): no copy at all
            return self.posteriors_
        init = self._majority_vote(enc)
        init[: prev.n_tasks] = self.posteriors_
        return init

    def partial_fit(self, new_data: Any, **kwargs: Any) -> "BaseAggregator":
        """Adds labels and refits, warm-started from the current posteriors and confusion matrices
        (the efficient-annotation seed refits from scratch after every online step)."""
        if self._enc is None:
            return self.fit(new_data, **kwargs)
        enc = extend(self._enc, new_data, self.on_duplicate)
        self._fit_encoded(enc, warm=self._warm_start_posteriors(enc), **kwargs)
        return self

    def refit(self, **kwargs: Any) -> "BaseAggregator":
        """Refits on the labels it already has, warm-started from its current posteriors: for when only the
        per-task prior changed (the online loop's second EM of a step, after the learner refit)."""
        enc = self._check_fitted()
        self._fit_encoded(enc, warm=self.posteriors_, **kwargs)
        return self

    # -- fitted attributes, built lazily from the arrays -----------------------------------------------
    @property
    def task_ids_(self) -> pd.Index:
        return self._check_fitted().task_ids

    @property
    def worker_ids_(self) -> pd.Index:
        return self._check_fitted().worker_ids

    @property
    def classes_(self) -> pd.Index:
        return self._check_fitted().classes

    @property
    def probas_(self) -> pd.DataFrame:
        enc = self._check_fitted()
        if "probas" not in self._cache:
            self._cache["probas"] = pd.DataFrame(self.posteriors_, index=enc.task_ids, columns=enc.classes)
        return self._cache["probas"]

    @property
    def labels_(self) -> pd.Series:
        """Most probable class per task; exact ties go to the first class in ``classes_`` order (the
        smallest label when labels are sortable)."""
        enc = self._check_fitted()
        if "labels" not in self._cache:
            idx = self.label_array_
            self._cache["labels"] = pd.Series(enc.classes[idx], index=enc.task_ids, name="agg_label")
        return self._cache["labels"]

    @property
    def label_array_(self) -> np.ndarray:
        """Dense class index (position in ``classes_``) of each task, int64 [T]."""
        self._check_fitted()
        post = self.posteriors_
        if _ext._C is not None and post.ndim == 2 and post.shape[1] > 0 and post.dtype in (np.float32, np.float64):
            # numpy's argmax is single-threaded and this is a full pass over T×K on the fit_predict path
            return _ext._C.aggregate.argmax_rows(np.ascontiguousarray(post), self._threads())
        return np.argmax(post, axis=1)

    def _errors_frame(self, theta_zy: np.ndarray) -> pd.DataFrame:
        """crowd-kit's errors_ layout from [W, z, y]: rows (worker, observed label), columns true label."""
        enc = self._check_fitted()
        W, K, _ = theta_zy.shape
        index = pd.MultiIndex.from_arrays(
            [enc.worker_ids[np.repeat(np.arange(W), K)], enc.classes[np.tile(np.arange(K), W)]],
            names=["worker", "label"])
        return pd.DataFrame(theta_zy.reshape(W * K, K), index=index, columns=enc.classes)
