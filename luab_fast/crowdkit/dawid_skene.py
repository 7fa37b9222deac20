"""crowd-kit's ``DawidSkene`` and ``OneCoinDawidSkene`` (crowd-kit 1.4.2, aggregation/classification/
dawid_skene.py) on the C++ engine of ``luab_fast.aggregate.DawidSkene`` (csrc/aggregate/dawid_skene.cpp) without
its Dirichlet prior: the same start (majority vote), update order (E-step, class prior, M-step, objective),
clipping at 1e-10, objective (ELBO per label) and stopping rule, so posteriors agree to ~1e-12.

crowd-kit's ``true_labels`` (gold tasks' posteriors fixed to their label at the start and after every E-step) and
``initial_error`` (worker error tables counted into, or put in place of, the first M-step) run in the engine too;
the initial tables are built here once, in pandas, as crowd-kit builds them (``initial_error_apply``).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd

from .._ext import require_ext
from ._frame import (
    EncodedCrowd,
    FittedAttributes,
    Lazy,
    encode,
    errors_columns,
    errors_frame,
    labels_series,
    observed_pairs,
    probas_frame,
    select_columns,
    threads,
    worker_series,
)

#: crowd-kit's _EPS: error cells, class priors and (after a fit) posteriors are clipped to at least this
EPS = 1e-10
STRATEGIES = ("assign", "addition")


class DawidSkene(FittedAttributes):
    """Dawid & Skene (1979): a confusion matrix per worker and a class prior, fitted by EM from the majority vote.

    Args (crowd-kit's): ``n_iter`` (EM iterations at most), ``tol`` (stop when the ELBO per label gains less),
    ``initial_error_strategy`` ("assign" or "addition": how ``fit``'s ``initial_error`` enters the first M-step).
    Keyword-only (luab_fast): ``n_threads``, None for OpenMP's default; results do not depend on it.

    ``fit(data, true_labels=None, initial_error=None)``: ``true_labels`` (Series by task) fixes those tasks'
    posteriors to their label; ``initial_error`` (DataFrame indexed by (worker, label), a column per true label):
    historical counts added to the first M-step's ("addition"), or the first error tables themselves ("assign").
    Fitted: ``labels_``, ``probas_``, ``priors_``, ``errors_`` ((worker, observed label) × true label),
    ``loss_history_``.

    Differs from crowd-kit where crowd-kit's result is undefined: a true label, or an ``initial_error`` column,
    that is not a label of ``data`` raises ValueError (crowd-kit adds it as a class whose posteriors are NaN).
    """

    _one_coin = False

    def __init__(self, n_iter: int = 100, tol: float = 1e-5, initial_error_strategy: str | None = None, *,
                 n_threads: int | None = None) -> None:
        self.n_iter = n_iter
        self.tol = tol
        self.initial_error_strategy = initial_error_strategy
        self.n_threads = n_threads

    def fit(self, data: pd.DataFrame, true_labels: pd.Series | None = None,
            initial_error: pd.DataFrame | None = None) -> "DawidSkene":
        frame = select_columns(data)
        if frame.empty:
            self._fit_empty()
        else:
            self._fit_frame(frame, true_labels, initial_error)
        return self

    def fit_predict_proba(self, data: pd.DataFrame, true_labels: pd.Series | None = None,
                          initial_error: pd.DataFrame | None = None) -> pd.DataFrame:
        return self.fit(data, true_labels, initial_error).probas_

    def fit_predict(self, data: pd.DataFrame, true_labels: pd.Series | None = None,
                    initial_error: pd.DataFrame | None = None) -> pd.Series:
        return self.fit(data, true_labels, initial_error).labels_

    def _fit_frame(self, frame: pd.DataFrame, true_labels: Any, initial_error: Any) -> None:
        crowd = encode(frame, tasks="first", workers="first", labels="first")
        n_iter, tol, n_threads = iterations(self.n_iter), tolerance(self.tol), threads(self.n_threads)
        C = require_ext(f"{type(self).__name__}.fit")
        post = theta = gold = None
        start_errors: pd.DataFrame | None = None
        if true_labels is not None:
            gold = gold_classes(true_labels, crowd)
        if initial_error is not None and self.initial_error_strategy is not None:
            post = C.aggregate.majority_vote(*crowd.arrays(), n_threads=n_threads)
            if gold is not None:
                set_gold_rows(post, gold)
            counts = C.aggregate.confusion_counts(*crowd.arrays(), post=post, n_threads=n_threads)
            start_errors = initial_errors(counts, crowd, initial_error, self.initial_error_strategy)
            if n_iter:  # the first E-step lists the classes in the order of the tables' columns
                crowd, post, gold = reorder_classes(crowd, e_step_classes(crowd.classes, start_errors.columns),
                                                    post, gold)
            theta = dense_errors(start_errors, crowd)
        res = C.aggregate.dawid_skene(*crowd.arrays(), init_post=post, n_iter=n_iter, tol=tol, one_coin=self._one_coin,
                                      n_threads=n_threads, init_theta=theta, gold=gold)
        self._crowd, self._res = crowd, res
        codes = C.aggregate.argmax_rows(res["post"], n_threads)
        prior = pd.Series(res["class_prior"], index=crowd.classes, name="prior")
        errors = start_errors if (start_errors is not None and not n_iter) else Lazy("_build_errors")
        self._set_fitted(probas_=Lazy("_build_probas"), priors_=prior, errors_=errors,
                         loss_history_=list(res["loss_history"]),
                         labels_=labels_series(codes, crowd.tasks, crowd.classes))

    # -- fitted attributes ----------------------------------------------------------------------------------
    def _fit_empty(self) -> None:
        """crowd-kit's early exit on a frame without rows (loss_history_ is left as it was)."""
        self._set_fitted(probas_=pd.DataFrame(), priors_=pd.Series(dtype=float, name="prior"),
                         errors_=pd.DataFrame(), labels_=pd.Series(dtype=float, name="agg_label"))

    def _build_probas(self) -> pd.DataFrame:
        post = self._res["post"]
        if self.loss_history_:  # crowd-kit's ELBO clips its posteriors in place, and they are the result
            np.maximum(post, EPS, out=post)
        return probas_frame(post, self._crowd.tasks, self._crowd.classes)

    def _build_errors(self) -> pd.DataFrame:
        return errors_frame(self._res["theta"], self._crowd)


class OneCoinDawidSkene(DawidSkene):
    """Dawid–Skene with one skill (accuracy) per worker: p(label | true) is the skill when they agree, else
    (1 − skill) / (K − 1), clipped to [1e-10, 1 − 1e-10].

    Args as ``DawidSkene`` (``initial_error_strategy`` is accepted and unused, as in crowd-kit); ``fit(data)``.
    Fitted: as ``DawidSkene``, plus ``skills_`` (Series "skill" by worker, in order of first appearance).
    """

    _one_coin = True

    def fit(self, data: pd.DataFrame) -> "OneCoinDawidSkene":  # type: ignore[override]
        frame = select_columns(data)
        if frame.empty:  # crowd-kit's early exit sets no skills_
            self._fit_empty()
        else:
            self._fit_frame(frame, None, None)
            self._set_fitted(skills_=worker_series(self._res["skills"], self._crowd.workers))
        return self

    def fit_predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:  # type: ignore[override]
        return self.fit(data).probas_

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:  # type: ignore[override]
        return self.fit(data).labels_

    def _build_errors(self) -> pd.DataFrame:
        """crowd-kit's one-coin error rows: the skill in the observed label's column, (1 − skill) / (K − 1)
        elsewhere, clipped to [eps, 1 − eps] (OneCoinDawidSkene._assign_skills)."""
        crowd = self._crowd
        w, z = observed_pairs(crowd)
        skills = self._res["skills"][w]
        K = crowd.n_classes
        table = np.repeat(((1 - skills) / max(K - 1, 1))[:, None], K, axis=1)
        table[np.arange(w.size), z] = skills
        np.clip(table, EPS, 1 - EPS, out=table)
        index = pd.MultiIndex.from_arrays([crowd.workers.take(w), crowd.classes.take(z)], names=["worker", "label"])
        return pd.DataFrame(table, index=index, columns=errors_columns(crowd.classes), copy=False)


# -- arguments ------------------------------------------------------------------------------------------------
def iterations(n_iter: Any) -> int:
    """n_iter as crowd-kit's range(n_iter) reads it: an integer; none below 1."""
    if not isinstance(n_iter, numbers.Integral) or isinstance(n_iter, bool):
        raise TypeError(f"n_iter must be an integer, got {n_iter!r}")
    return min(max(int(n_iter), 0), 2**31 - 1)


def tolerance(tol: Any) -> float:
    """tol as crowd-kit's ``gain < tol`` reads it: any number; NaN never stops early (-inf does the same)."""
    if not isinstance(tol, numbers.Real) or isinstance(tol, bool):
        raise TypeError(f"tol must be a number, got {tol!r}")
    return -np.inf if np.isnan(tol) else float(tol)


# -- true_labels ----------------------------------------------------------------------------------------------
def gold_classes(true_labels: Any, crowd: EncodedCrowd) -> np.ndarray | None:
    """Each dense task's gold class index, -1 for none (crowd-kit's _correct_probas_with_golden: tasks of
    true_labels that are not in data are ignored); None when no task of data has one."""
    gold = true_labels if isinstance(true_labels, pd.Series) else pd.Series(true_labels)
    if gold.isna().any():  # crowd-kit: "cannot convert float NaN to integer"
        raise ValueError("true_labels must not contain NaN")
    if not gold.index.is_unique:
        raise ValueError("true_labels must have one label per task; its index has duplicates")
    unknown = pd.unique(gold[crowd.classes.get_indexer(gold.to_numpy()) < 0])
    if len(unknown):
        raise ValueError(f"true_labels holds labels that no answer in data has: {list(unknown[:5])}; crowd-kit "
                         "would add each as a class without posteriors (NaN), so they are refused")
    codes = crowd.classes.get_indexer(gold.reindex(crowd.tasks).to_numpy())
    return np.ascontiguousarray(codes, dtype=np.int64) if (codes >= 0).any() else None


def set_gold_rows(post: np.ndarray, gold: np.ndarray) -> None:
    rows = np.flatnonzero(gold >= 0)
    post[rows] = 0.0
    post[rows, gold[rows]] = 1.0


# -- initial_error --------------------------------------------------------------------------------------------
def initial_errors(counts: np.ndarray, crowd: EncodedCrowd, initial_error: pd.DataFrame,
                   strategy: str) -> pd.DataFrame:
    """crowd-kit's first error tables with ``initial_error`` (dawid_skene.py, _m_step and initial_error_apply):
    the expected counts of the observed (worker, label) pairs plus initial_error ("addition"), or initial_error
    itself ("assign"); clipped to >= eps, then each worker's column normalised over the rows it has."""
    if not isinstance(initial_error, pd.DataFrame):
        raise TypeError(f"initial_error must be a pandas DataFrame, got {type(initial_error).__name__}")
    w, z = observed_pairs(crowd)
    index = pd.MultiIndex.from_arrays([crowd.workers.take(w), crowd.classes.take(z)], names=["worker", "label"])
    errors = pd.DataFrame(counts[w, z], index=index, columns=errors_columns(crowd.classes))
    if initial_error.index.names != errors.index.names:
        raise ValueError(f"The index of initial_error must be: {errors.index.names}, but got: "
                         f"{initial_error.index.names}")
    if not initial_error.index.is_unique:
        raise ValueError("initial_error must have one row per (worker, label); its index has duplicates")
    if initial_error.isna().to_numpy().any():
        raise ValueError("initial_error must not contain NaN")
    if strategy == "assign":
        found = errors.index.isin(initial_error.index)
        if not found.all():
            lacking = errors.index[~found].get_level_values("worker").unique()
            raise ValueError(f"All the workers in data should be in initial_error: Can not find {len(lacking)} "
                             "workers' error matrix in initial_error")
        per_worker = initial_error.groupby("worker", sort=False).sum()
        if (initial_error <= 1.0).all().all() and not np.allclose(per_worker, 1.0):
            raise ValueError("The sum of each worker's error matrix in initial_error should be 1.0")
        errors = initial_error
    elif strategy == "addition":
        errors = errors.add(initial_error, axis="index", fill_value=0.0)
    else:
        raise ValueError(f"Invalid initial_error_strategy: {strategy}, should be 'assign' or 'addition'")
    errors = errors.clip(lower=EPS)
    return (errors / errors.groupby("worker", sort=False).sum()).reindex_like(errors)


def e_step_classes(classes: pd.Index, error_columns: pd.Index) -> pd.Index:
    """The columns of crowd-kit's first E-step: its class prior (indexed by the classes) plus the error tables'
    column sums align to the union of both, in a new order when the two orders differ; they must be the same
    labels."""
    aligned = (pd.Series(0.0, index=classes) + pd.DataFrame(columns=error_columns)).columns
    if len(aligned) != len(classes) or not classes.isin(aligned).all():
        extra = [c for c in error_columns if c not in set(classes)]
        lacking = [c for c in classes if c not in set(error_columns)]
        raise ValueError(f"initial_error's columns must be the labels of data: got {list(extra[:5])} that no answer "
                         f"has and lacks {list(lacking[:5])} (crowd-kit's posteriors would be NaN there)")
    return pd.Index(aligned, name="label", dtype=classes.dtype)


def reorder_classes(crowd: EncodedCrowd, classes: pd.Index, post: np.ndarray,
                    gold: np.ndarray | None) -> tuple[EncodedCrowd, np.ndarray, np.ndarray | None]:
    """The crowd, starting posteriors and gold classes with the classes in the given order."""
    if classes.equals(crowd.classes):
        return crowd, post, gold
    new_of_old = classes.get_indexer(crowd.classes)
    old_of_new = crowd.classes.get_indexer(classes)
    moved = EncodedCrowd(crowd.task, crowd.worker, np.ascontiguousarray(new_of_old[crowd.label]), crowd.tasks,
                         crowd.workers, classes)
    gold = None if gold is None else np.ascontiguousarray(np.where(gold >= 0, new_of_old[gold], -1))
    return moved, np.ascontiguousarray(post[:, old_of_new]), gold


def dense_errors(errors: pd.DataFrame, crowd: EncodedCrowd) -> np.ndarray:
    """The engine's starting table [W, observed z, true y] from crowd-kit-shaped error tables: rows of workers or
    labels outside data are dropped (they only entered the normalisation), absent rows are 0 (never read)."""
    K = crowd.n_classes
    w = crowd.workers.get_indexer(errors.index.get_level_values("worker"))
    z = crowd.classes.get_indexer(errors.index.get_level_values("label"))
    keep = (w >= 0) & (z >= 0)
    values = errors.reindex(columns=crowd.classes).to_numpy(np.float64, na_value=0.0)
    table = np.zeros((crowd.n_workers, K, K))
    table[w[keep], z[keep]] = values[keep]
    return table
