"""GLAD (Whitehill, Ruvolo, Wu, Bergsma, Movellan: "Whose Vote Should Count More", NeurIPS 2009) with crowd-kit
1.4.2's API and results; the EM runs in C++ (csrc/aggregate/glad.cpp).

crowd-kit's fit is reproduced step for step: alphas and betas start at 1, priors N(mean, 1) on both (means 1 unless
given), the E-step's posteriors, then per EM iteration an M-step by conjugate gradient on crowd-kit's Q (the engine
ports scipy's ``minimize(method="CG")`` with its line searches, ``m_step_max_iter`` iterations, gradient tolerance
``m_step_tol``), stopping when Q / (labels × classes) rises by less than ``tol`` — with one deliberate difference: a
rise in [0, tol) after an M-step cut short at ``m_step_max_iter`` must be confirmed by a second in a row. There the
EM is still climbing and its gains hover around ``tol``, so crowd-kit's single test stops it at a random iteration
(on rte crowd-kit ran 3 iterations more than ours used to, to a 3.3e-5 higher Q); confirmed, the final Q is no lower
than crowd-kit's on every crowd tested. Where Q falls or the M-step converged, the fit stops where crowd-kit's does,
with crowd-kit's results. Its quirks are kept: ``probas_`` and ``labels_`` come from the last E-step, before the
last M-step; the first loss is compared with the *unnormalised* Q of the start; a label missing from
``labels_priors`` agrees with no class.

Edge cases as crowd-kit: empty data raises ZeroDivisionError (here ``EmptyCrowdError``, also a ValueError); a
missing column raises KeyError or AttributeError (here ``MissingColumnsError``, both of those and a ValueError,
naming the columns); a single worker or a single label fits; ties go to the first label in sorted order.
Deliberately different: NaN in a column, a prior mean missing for a worker or task, or priors that are not
finite and >= 0 raise ValueError (crowd-kit turns them into NaN results).
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

import numpy as np
import pandas as pd

from .._ext import require_ext
from ..aggregate import _checks
from ._frame import (
    COLUMNS,
    EmptyCrowdError,
    MissingColumnsError,
    factorize,
    labels_series,
    missing_columns,
    probas_frame,
)

__all__ = ["GLAD", "EmptyCrowdError", "MissingColumnsError"]


def _prior_means(given: Any, index: pd.Index, name: str, what: str) -> np.ndarray:
    """A prior mean per worker (or task): 1.0 (crowd-kit's default), a number, or a Series covering the index."""
    if given is None:
        return np.ones(len(index))
    if _checks.is_number(given):
        values = np.full(len(index), float(given))
    elif isinstance(given, pd.Series):
        values = given.reindex(index).to_numpy(np.float64, na_value=np.nan)
        lacking = index[np.isnan(values)]
        if len(lacking):
            raise ValueError(f"{name} must give a finite mean for every {what}; missing or NaN for "
                             f"{lacking[:5].tolist()}")
    else:
        raise TypeError(f"{name} must be None, a number or a pandas Series indexed by {what}, got "
                        f"{type(given).__name__}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} must be finite, got {given!r}")
    return values


class GLAD:
    """Generative model of Labels, Abilities and Difficulties: worker w answers task t correctly with probability
    sigmoid(alpha_w · exp(beta_t)), else uniformly one of the other labels. Arguments, defaults and fitted
    attributes as crowd-kit 1.4.2's ``GLAD``; ``n_threads`` (keyword only, None = all cores) sets the engine's
    OpenMP threads and does not change the results.

    Fitted: ``probas_`` (DataFrame [tasks, labels], index ``task`` and columns ``variable``, both sorted),
    ``labels_`` (Series ``agg_label``), ``alphas_`` (Series ``alpha`` by ``worker``), ``betas_`` (Series ``beta``
    by ``task``), both in order of first appearance, ``priors_``, ``loss_history_`` (Q / (labels × classes) after
    each M-step), and crowd-kit's ``tasks_``, ``workers_``, ``prior_labels_``, ``alphas_priors_mean_``,
    ``betas_priors_mean_``.
    """

    def __init__(self, n_iter: int = 100, tol: float = 1e-5, silent: bool = True,
                 labels_priors: pd.Series | None = None, alphas_priors_mean: pd.Series | None = None,
                 betas_priors_mean: pd.Series | None = None, m_step_max_iter: int = 25, m_step_tol: float = 1e-2,
                 *, n_threads: int | None = None) -> None:
        self.n_iter = n_iter
        self.tol = tol
        self.silent = silent
        self.labels_priors = labels_priors
        self.alphas_priors_mean = alphas_priors_mean
        self.betas_priors_mean = betas_priors_mean
        self.m_step_max_iter = m_step_max_iter
        self.m_step_tol = m_step_tol
        self.n_threads = n_threads

    def __repr__(self) -> str:
        names = ("n_iter", "tol", "silent", "labels_priors", "alphas_priors_mean", "betas_priors_mean",
                 "m_step_max_iter", "m_step_tol")
        return f"GLAD({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    def fit(self, data: pd.DataFrame) -> "GLAD":
        """Fits on ``data``, a DataFrame with columns ``task``, ``worker``, ``label``. Returns self."""
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"GLAD.fit: data must be a pandas DataFrame (task, worker, label), got "
                            f"{type(data).__name__}")
        missing = missing_columns(data)
        if missing:
            raise MissingColumnsError(f"GLAD.fit: data must have columns {list(COLUMNS)}, missing {missing} "
                                      f"(got {list(data.columns)})")
        if len(data) == 0:
            raise EmptyCrowdError("GLAD.fit: data has no labels (crowd-kit raises ZeroDivisionError here)")
        n_iter = max(operator.index(self.n_iter), 0)  # a negative count runs none, as range() does
        m_step_max_iter = max(operator.index(self.m_step_max_iter), 0)
        for name in ("tol", "m_step_tol"):
            if not (_checks.is_number(getattr(self, name)) and not math.isnan(getattr(self, name))):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        tasks, task_names = factorize(data["task"], "first", "task", "GLAD.fit")  # crowd-kit's pd.unique order
        workers, worker_names = factorize(data["worker"], "first", "worker", "GLAD.fit")
        labels, priors = self._labels_and_priors(data["label"])
        self.tasks_ = pd.unique(data["task"])
        self.workers_ = pd.unique(data["worker"])
        self.prior_labels_ = priors.index if self.labels_priors is not None else pd.unique(data["label"])
        self.priors_ = priors
        alpha_mean = _prior_means(self.alphas_priors_mean, worker_names, "alphas_priors_mean", "worker")
        beta_mean = _prior_means(self.betas_priors_mean, task_names, "betas_priors_mean", "task")
        self.alphas_priors_mean_ = self._given_or_ones(self.alphas_priors_mean, self.workers_)
        self.betas_priors_mean_ = self._given_or_ones(self.betas_priors_mean, self.tasks_)

        C = require_ext("GLAD.fit")
        with _Progress(n_iter, self.silent) as progress:
            out = C.aggregate.glad(tasks, workers, labels, len(task_names), len(worker_names), len(priors),
                                   priors.to_numpy(np.float64), alpha_mean, beta_mean, n_iter=n_iter,
                                   tol=float(self.tol), m_step_max_iter=m_step_max_iter,
                                   m_step_tol=float(self.m_step_tol), progress=progress.report,
                                   n_threads=_checks.n_threads(self.n_threads))
        self._set_results(out, task_names, priors.index)
        return self

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:
        """Fits on ``data`` and returns ``labels_``: the most likely label of each task."""
        return self.fit(data).labels_

    def fit_predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        """Fits on ``data`` and returns ``probas_``: each task's posterior over the labels."""
        return self.fit(data).probas_

    def _labels_and_priors(self, column: pd.Series) -> tuple[np.ndarray, pd.Series]:
        """Each label's class code (K = len(priors) for a label the priors do not list) and the priors."""
        if self.labels_priors is None:
            labels, names = factorize(column, "first", "label", "GLAD.fit")
            return labels, pd.Series(1.0 / len(names), index=pd.unique(column))
        priors = self.labels_priors
        if not isinstance(priors, pd.Series) or len(priors) == 0 or not priors.index.is_unique:
            raise ValueError("labels_priors must be a non-empty pandas Series indexed by distinct labels")
        values = priors.to_numpy(np.float64, na_value=np.nan)
        if not (np.isfinite(values).all() and (values >= 0).all()):
            raise ValueError(f"labels_priors must hold finite probabilities >= 0, got {values.tolist()[:10]}")
        factorize(column, "first", "label", "GLAD.fit")  # NaN check
        labels = priors.index.get_indexer(column)
        labels[labels < 0] = len(priors)  # crowd-kit: no class matches it
        return labels.astype(np.int64, copy=False), priors

    @staticmethod
    def _given_or_ones(given: Any, names: Any) -> Any:
        return given if given is not None else pd.Series(1.0, index=names)

    def _set_results(self, out: dict[str, Any], task_names: pd.Index, classes: pd.Index) -> None:
        # crowd-kit's probas_ come out of a groupby: tasks and labels sorted (take keeps rows C-contiguous)
        post = out["post"]
        task_order, class_order = task_names.argsort(), classes.argsort()
        if not task_names.is_monotonic_increasing:
            post = post.take(task_order, axis=0)
        if not classes.is_monotonic_increasing:
            post = post.take(class_order, axis=1)
        tasks, columns = pd.Index(task_names[task_order], name="task"), pd.Index(classes[class_order], name="variable")
        self.probas_ = probas_frame(post, tasks, columns)
        self.labels_ = labels_series(post.argmax(axis=1), tasks, columns)
        # index names come with crowd-kit's M-step; without one (n_iter=0) they stay unnamed
        fitted = out["n_iter"] > 0
        self.alphas_ = pd.Series(out["alphas"], index=pd.Index(self.workers_, name="worker" if fitted else None),
                                 name="alpha")
        self.betas_ = pd.Series(out["betas"], index=pd.Index(self.tasks_, name="task" if fitted else None),
                                name="beta")
        self.loss_history_ = [float(q) for q in out["loss_history"]]


class _Progress:
    """crowd-kit's progress bar (tqdm: "Iterations", described by the last Q) unless silent."""

    def __init__(self, n_iter: int, silent: bool) -> None:
        self.bar: Any = None
        self.report: Callable[[int, float], None] | None = None
        if not silent:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n_iter, desc="Iterations")
            self.report = self._report

    def _report(self, iteration: int, q: float) -> None:
        if iteration > 0:
            self.bar.update(1)
        self.bar.set_description(f"Q = {round(q, 4)}")

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
