"""The efficient-annotation seed's aggregator (Liao, Kar, Fidler, CVPR 2021), exactly, in C++.

Hard EM: each worker's confusion rows are Dirichlet posterior means (alpha + N_w)[y, :] / Σ, with N_w the
counts of (argmax posterior, given label) over the worker's labels; a uniform class prior; a machine
learner's probabilities enter as a per-task prior; at most ``max_iter`` iterations, stopping on the
z-likelihood ('soft') or on unchanged argmaxes ('hard'). Every log adds the seed's 1e-8.

Deliberate differences: ties in the hard M-step go to the lowest class (the seed adds 1e-8 random
noise), and ``partial_fit`` starts from the previous posteriors instead of from N_w = 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .._ext import require_ext
from . import _checks
from ._input import Encoded
from .base import BaseAggregator
from .dawid_skene import align_task_prior


def homogeneous_prior(global_cm: np.ndarray, strength: float = 10.0) -> np.ndarray:
    """The seed's ``homegeneous_workers`` prior from pooled confusion counts [K, K]: every off-diagonal
    cell (mean row sum − mean diagonal)/(K − 1), every diagonal cell the mean diagonal, × strength."""
    cm = _checks.float_array(global_cm, "global_cm", "a square [K, K] count matrix")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 2:
        raise ValueError(f"global_cm must be a square [K, K] count matrix with K >= 2, got shape {cm.shape}")
    if not np.isfinite(cm).all() or (cm < 0).any():
        raise ValueError("global_cm must hold finite counts >= 0")
    strength = _checks.number(strength, "strength")
    K = cm.shape[0]
    off = (cm.sum(1).mean() - cm.diagonal().mean()) / (K - 1)
    alpha = np.full((K, K), off)
    np.fill_diagonal(alpha, cm.diagonal().mean())
    return alpha * float(strength)


def predefined_prior(n_classes: int, pos_count: float = 2.0, neg_count: float = 1.0,
                     strength: float = 10.0) -> np.ndarray:
    """The seed's ``predefined_homegeneous`` prior: diagonal pos_count, off-diagonal neg_count/K, × strength."""
    n_classes = _checks.integer(n_classes, "n_classes", 1)
    pos_count, neg_count = _checks.number(pos_count, "pos_count"), _checks.number(neg_count, "neg_count")
    strength = _checks.number(strength, "strength")
    alpha = np.full((n_classes, n_classes), neg_count / n_classes)
    np.fill_diagonal(alpha, pos_count)
    return alpha * float(strength)


class BayesAggregator(BaseAggregator):
    """The seed's ``BayesAggregator`` + ``EMOptimizer`` EM loop.

    Args:
        prior: Dirichlet pseudo-counts [K, K] (shared) or [W, K, K] indexed [true, observed], already
            multiplied by the strength; None builds the seed's default: ``homogeneous_prior(global_cm,
            strength)`` if ``global_cm`` is given, else ``predefined_prior(K, strength=strength)``.
        criterion: 'soft' (|Δ mean z-likelihood| < likelihood_epsilon) or 'hard' (no argmax changes).
        max_iter: EM iterations at most (the seed's max_em_steps = 10).

    Fitted: ``labels_``, ``probas_``, ``risk_`` (1 − max posterior), ``confusion_`` [W, true, observed],
    ``counts_`` (hard counts, same layout), ``errors_``, ``loss_history_`` (mean z-likelihood per
    iteration), ``n_iter_``, ``converged_``.
    """

    name = "bayes"

    def __init__(self, prior: np.ndarray | None = None, global_cm: np.ndarray | None = None,
                 strength: float = 10.0, criterion: str = "soft", max_iter: int = 10,
                 likelihood_epsilon: float = 1e-3, n_threads: int | None = None, on_duplicate: str = "keep") -> None:
        super().__init__(n_threads=n_threads, on_duplicate=on_duplicate)
        self.prior = prior
        self.global_cm = global_cm
        self.strength = strength
        self.criterion = criterion
        self.max_iter = max_iter
        self.likelihood_epsilon = likelihood_epsilon

    def fit(self, data: Any, learner_prob: np.ndarray | pd.DataFrame | None = None,
            **kwargs: Any) -> "BayesAggregator":
        """``learner_prob`` [T, K] (or a DataFrame indexed by task): the learner's calibrated probabilities,
        multiplied into each posterior as a per-task prior."""
        return super().fit(data, learner_prob=learner_prob, **kwargs)  # type: ignore[return-value]

    def _alpha(self, enc: Encoded) -> np.ndarray:
        K = enc.n_classes
        if self.prior is not None:
            alpha = _checks.float_array(self.prior, "prior", "[K, K] or [W, K, K] pseudo-counts")
            if alpha.ndim not in (2, 3) or alpha.shape[-2:] != (K, K) or (
                    alpha.ndim == 3 and alpha.shape[0] != enc.n_workers):
                raise ValueError(f"prior must be [K, K] or [W, K, K] with K={K}, W={enc.n_workers}, "
                                 f"got shape {alpha.shape}")
        elif self.global_cm is not None:
            alpha = homogeneous_prior(self.global_cm, self.strength)
            if alpha.shape != (K, K):
                raise ValueError(f"global_cm must be [{K}, {K}] for {K} classes, got {alpha.shape}")
        else:
            alpha = predefined_prior(K, strength=self.strength)
        if not np.isfinite(alpha).all() or (alpha < 0).any():
            raise ValueError("prior pseudo-counts must be finite and >= 0")
        return np.ascontiguousarray(alpha)

    # posteriors, warm start, learner prior; counts, theta, its log and a per-worker prior
    _task_tables, _worker_tables = 3, 4

    def _run(self, enc: Encoded, warm: np.ndarray | None, learner_prob: Any = None) -> None:
        if not isinstance(self.criterion, str) or self.criterion not in ("soft", "hard"):
            raise ValueError(f"criterion must be 'soft' or 'hard', got {self.criterion!r}")
        _checks.integer(self.max_iter, "max_iter", 0)
        _checks.number(self.likelihood_epsilon, "likelihood_epsilon")
        C = require_ext("BayesAggregator.fit")
        res = C.aggregate.bayes(
            enc.task, enc.worker, enc.label, enc.n_tasks, enc.n_workers, enc.n_classes, self._alpha(enc),
            task_prior=align_task_prior(learner_prob, enc, "learner_prob"), init_post=warm, max_iter=int(self.max_iter),
            hard_criterion=self.criterion == "hard", likelihood_epsilon=float(self.likelihood_epsilon),
            n_threads=self._threads())
        self.posteriors_ = res["post"]
        self.theta_ = res["theta"]
        self._counts = res["counts"]
        self.loss_history_ = list(res["z_likelihood"])
        self.n_iter_ = int(res["n_iter"])
        self.converged_ = bool(res["converged"])
        self.n_likelihood_decreases_ = int(res["n_decreases"])

    @property
    def risk_(self) -> pd.Series:
        """1 − max posterior per task: the seed marks a task done when this drops below its threshold."""
        self._check_fitted()
        return pd.Series(1.0 - self.posteriors_.max(axis=1), index=self.task_ids_, name="risk")

    @property
    def confusion_(self) -> np.ndarray:
        self._check_fitted()
        return self.theta_.transpose(0, 2, 1)

    @property
    def counts_(self) -> np.ndarray:
        self._check_fitted()
        return self._counts.transpose(0, 2, 1)

    @property
    def errors_(self) -> pd.DataFrame:
        if "errors" not in self._cache:
            self._cache["errors"] = self._errors_frame(self.theta_)
        return self._cache["errors"]
