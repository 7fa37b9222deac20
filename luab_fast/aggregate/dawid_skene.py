"""Dawid–Skene soft EM (full confusion matrices) and its one-coin variant, on the C++ engine.

Same update order, initialisation (majority vote), class-prior re-estimation, ELBO and stopping rule as
crowd-kit 1.4.2, so ``prior=0.0`` reproduces crowd-kit's labels and posteriors (to ~1e-12). The default
adds Dirichlet pseudo-counts to every confusion row: unsmoothed DS with many classes and sparse workers
fits K² cells per worker from a few dozen labels and collapses (crowd-kit: 0.54 accuracy where majority
vote gets 0.98); the default prior keeps it at majority-vote quality or better.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .._ext import require_ext
from . import _checks
from ._input import Encoded
from .base import BaseAggregator


def dirichlet_prior(n_classes: int, prior: float | np.ndarray, prior_diag: float) -> np.ndarray | None:
    """Pseudo-counts [K, K] (or [W, K, K]) indexed [true, observed]; None when all zero (crowd-kit)."""
    if _checks.is_number(prior) or isinstance(prior, (bool, np.bool_)):
        if not (_checks.is_number(prior) and _checks.is_number(prior_diag)) or \
                not (np.isfinite(prior) and np.isfinite(prior_diag) and prior >= 0 and prior_diag >= 0):
            # NaN or inf pseudo-counts gave every task class 0 or 2, silently
            raise ValueError(f"prior and prior_diag must be >= 0 and finite numbers, got prior={prior!r} and "
                             f"prior_diag={prior_diag!r}")
        alpha = np.full((n_classes, n_classes), float(prior))
        alpha[np.diag_indices(n_classes)] += float(prior_diag)
    else:
        expected = f"a float, a [K, K] or a [W, K, K] array with K={n_classes}"
        alpha = _checks.float_array(prior, "prior", expected)
        if alpha.shape[-2:] != (n_classes, n_classes) or alpha.ndim not in (2, 3):
            raise ValueError(f"prior must be {expected}, got shape {alpha.shape}")
        if not np.isfinite(alpha).all() or (alpha < 0).any():
            raise ValueError("prior pseudo-counts must be finite and >= 0")
    return None if not alpha.any() else np.ascontiguousarray(alpha)


class DawidSkene(BaseAggregator):
    """Dawid & Skene (1979) with Dirichlet pseudo-counts on each worker's confusion rows.

    p(z | y, w) = (N_w[y, z] + alpha[y, z]) / Σ_z' (...), N_w the expected counts; alpha = ``prior`` on
    every cell plus ``prior_diag`` on the diagonal. ``prior=0.0, prior_diag=0.0`` is crowd-kit's
    ``DawidSkene`` exactly. ``prior`` may also be a [K, K] or [W, K, K] array of pseudo-counts.

    Update order (crowd-kit's): E-step, class prior, M-step, loss. So a task without labels (array
    input with ``n_tasks`` beyond the labelled ids) ends with the class prior of the *previous*
    iteration, which differs from ``priors_`` by the last update.

    Fitted: ``labels_``, ``probas_``, ``priors_`` (class prior), ``errors_`` (crowd-kit layout:
    (worker, observed label) × true label), ``confusion_`` (ndarray [W, true, observed]),
    ``loss_history_`` (ELBO per label), ``n_iter_``.

    ``precision="float32"`` stores the posteriors and confusion tables in float32 (all arithmetic stays in
    float64): EM is bound by reading one random table row per label, so this halves its memory and
    speeds it up on large crowds; 99.9% of posteriors move by < 1e-6 (a near-tied task by up to ~1e-3)
    and labels agree ≥ 99.9% (tested).
    ``posteriors_`` are then float32.
    """

    name = "ds"
    _one_coin = False

    def __init__(self, n_iter: int = 100, tol: float = 1e-5, prior: float | np.ndarray = 0.01,
                 prior_diag: float = 0.05, precision: str = "float64", n_threads: int | None = None,
                 on_duplicate: str = "keep") -> None:
        super().__init__(n_threads=n_threads, on_duplicate=on_duplicate)
        self.n_iter = n_iter
        self.tol = tol
        self.prior = prior
        self.prior_diag = prior_diag
        self.precision = precision

    def _alpha(self, enc: Encoded) -> np.ndarray | None:
        return dirichlet_prior(enc.n_classes, self.prior, self.prior_diag)

    def fit(self, data: Any, task_prior: np.ndarray | pd.DataFrame | None = None,
            **kwargs: Any) -> "DawidSkene":
        """``task_prior`` (optional, [T, K] or a DataFrame indexed by task): per-task class probabilities,
        e.g. a machine learner's, multiplied into every posterior."""
        return super().fit(data, task_prior=task_prior, **kwargs)  # type: ignore[return-value]

    _task_tables, _worker_tables = 3, 2  # posteriors, warm start, task prior; theta and its log

    def _run(self, enc: Encoded, warm: np.ndarray | None, task_prior: Any = None) -> None:
        _checks.integer(self.n_iter, "n_iter", 0)
        _checks.number(self.tol, "tol", finite=False)  # tol=inf: stop after the first iteration
        if self.precision not in ("float64", "float32"):
            raise ValueError(f"precision must be 'float64' or 'float32', got {self.precision!r}")
        C = require_ext(f"{type(self).__name__}.fit")
        res = C.aggregate.dawid_skene(
            enc.task, enc.worker, enc.label, enc.n_tasks, enc.n_workers, enc.n_classes, warm,
            alpha=self._alpha(enc), task_prior=align_task_prior(task_prior, enc), n_iter=int(self.n_iter),
            tol=float(self.tol), one_coin=self._one_coin, single_precision=self.precision == "float32",
            n_threads=self._threads())
        self.posteriors_ = res["post"]
        self.class_prior_ = res["class_prior"]
        self._theta = res["theta"]  # [W, observed, true]; None for one-coin (built from the skills)
        self._skills = res["skills"]
        self.loss_history_ = list(res["loss_history"])
        self.n_iter_ = int(res["n_iter"])

    @property
    def theta_(self) -> np.ndarray:
        """p(observed z | true y, worker) as [W, z, y] (crowd-kit's errors_ layout)."""
        self._check_fitted()
        return self._theta

    @property
    def priors_(self) -> pd.Series:
        return pd.Series(self.class_prior_, index=self.classes_, name="prior")

    @property
    def errors_(self) -> pd.DataFrame:
        if "errors" not in self._cache:
            self._cache["errors"] = self._errors_frame(self.theta_)
        return self._cache["errors"]

    @property
    def confusion_(self) -> np.ndarray:
        """p(observed | true, worker) as [W, true, observed]: each row sums to 1."""
        self._check_fitted()
        return self.theta_.transpose(0, 2, 1)


class OneCoinDawidSkene(DawidSkene):
    """One accuracy per worker (crowd-kit's ``OneCoinDawidSkene``): p(z | y) = s_w if z == y else
    (1 - s_w)/(K - 1). ``prior=(a, b)`` adds Beta pseudo-counts to right/wrong answers; the default
    (0, 0) is crowd-kit exactly. Fitted additionally: ``skills_``."""

    name = "onecoin"
    _one_coin = True
    _worker_tables = 0  # one skill per worker; theta_ [W, K, K] is built only when asked for

    def __init__(self, n_iter: int = 100, tol: float = 1e-5, prior: tuple[float, float] = (0.0, 0.0),
                 precision: str = "float64", n_threads: int | None = None, on_duplicate: str = "keep") -> None:
        super().__init__(n_iter=n_iter, tol=tol, prior=0.0, prior_diag=0.0, precision=precision,
                         n_threads=n_threads, on_duplicate=on_duplicate)
        self.prior = prior  # type: ignore[assignment]

    def _alpha(self, enc: Encoded) -> np.ndarray | None:
        a = _checks.float_array(self.prior, "prior", "(right, wrong) pseudo-counts >= 0")
        if a.shape != (2,) or not np.isfinite(a).all() or (a < 0).any():
            raise ValueError(f"prior must be (right, wrong) pseudo-counts >= 0, got {self.prior!r}")
        return a if a.any() else None

    @property
    def skills_(self) -> pd.Series:
        self._check_fitted()
        return pd.Series(self._skills, index=self.worker_ids_, name="skill")

    @property
    def theta_(self) -> np.ndarray:
        """[W, z, y]: skill on the diagonal, (1 − skill)/(K − 1) elsewhere, clipped as crowd-kit does."""
        self._check_fitted()
        if "theta" not in self._cache:
            K = self.posteriors_.shape[1]
            _checks.check_fits(8 * len(self._skills) * K * K, f"theta_ / confusion_ of {len(self._skills):,} "
                               f"workers × {K:,}² classes", "read skills_ instead (one accuracy per worker)")
            self._cache["theta"] = one_coin_theta(self._skills, K)
        return self._cache["theta"]


def one_coin_theta(skills: np.ndarray, n_classes: int) -> np.ndarray:
    """[len(skills), z, y] from one-coin skills: skill on the diagonal, (1 − skill)/(K − 1) elsewhere, clipped as
    crowd-kit does (symmetric, so also [W, y, z]); for a few workers without building all W."""
    skills, K, eps = np.asarray(skills, np.float64), n_classes, 1e-10
    if K == 1:
        return np.ones((len(skills), 1, 1))
    right = np.clip(skills, eps, 1 - eps)
    wrong = np.clip((1 - skills) / (K - 1), eps, 1 - eps)
    theta = np.repeat(wrong[:, None, None], K, 1).repeat(K, 2)
    theta[:, np.arange(K), np.arange(K)] = right[:, None]
    return theta


def align_task_prior(task_prior: Any, enc: Encoded, name: str = "task_prior") -> np.ndarray | None:
    """A per-task prior as float64 [T, K] in dense task order, validated (``name`` is used in errors)."""
    if task_prior is None:
        return None
    if isinstance(task_prior, pd.DataFrame):
        missing = enc.task_ids.difference(task_prior.index)
        if len(missing):
            raise ValueError(f"{name} has no row for tasks {missing[:5].tolist()}")
        arr = _checks.float_array(task_prior.reindex(index=enc.task_ids, columns=enc.classes), name,
                                  "a [tasks, classes] frame of probabilities")
    else:
        arr = _checks.float_array(task_prior, name, "a [tasks, classes] array of probabilities")
    if arr.shape != (enc.n_tasks, enc.n_classes):
        raise ValueError(f"{name} must have shape ({enc.n_tasks}, {enc.n_classes}) (tasks × classes), "
                         f"got {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must hold finite probabilities >= 0")
    return np.ascontiguousarray(arr)
