"""MACE (Hovy, Berg-Kirkpatrick, Vaswani, Hovy: "Learning Whom to Trust with MACE", NAACL 2013) with crowd-kit
1.4.2's API and results; the iterations run in C++ (csrc/aggregate/mace.cpp).

crowd-kit's behaviour is reproduced on purpose, its quirks included, so that results are equal, not similar:

- the random starts are drawn here with crowd-kit's own calls (``scipy.stats.uniform(1, 1 + default_noise)
  .rvs(size, random_state)`` for spamming, then for thetas, per restart), and the engine iterates from them.
  An int ``random_state`` seeds a fresh generator for every draw, so every restart starts (and ends) alike;
  equal starts are fitted once. ``None`` draws from numpy's global generator, a RandomState or Generator
  from itself, so restarts differ;
- ``smoothing`` is stored but unused: the EM M-step smooths by ``smoothing_ = 0.01 / K``; any ``method``
  other than ``"vb"`` is EM;
- crowd-kit's M-step returns the new ``thetas_`` in sorted worker and label order while its E-step indexes
  them in order of first appearance (a pandas groupby): the engine writes them the same way (mace.hpp);
- the log marginal likelihood is Σ_tasks log(p(task's labels) + 1e-8); ``log_marginal_likelihood_`` (not in
  crowd-kit) holds the kept restart's.

Edge cases as crowd-kit: a missing column raises KeyError; empty data raises ZeroDivisionError (here
``EmptyCrowdError``, also a ValueError, with a message); ties go to the first label in order of appearance.
Deliberately different: NaN in a column raises ValueError (crowd-kit silently misindexes them), and
``n_restarts < 1`` raises ValueError (crowd-kit: UnboundLocalError).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import pandas as pd

from .._ext import require_ext
from ..aggregate import _checks
from ._frame import EmptyCrowdError, EncodedCrowd, factorize, probas_frame, random_generator

__all__ = ["MACE", "EmptyCrowdError"]

#: crowd-kit's symmetric Dirichlet prior count on each worker's spam answers (mace.py, _initialize)
STRATEGY_PRIOR = 10.0
#: why MACE.fit refuses NaN or None ids (its ValueError's wording: crowd-kit's MACE gives them wrong indices)
NAN_IDS = "crowd-kit misindexes them, so "


def _uniform_start(seed: Any, shape: tuple[int, int], default_noise: float) -> np.ndarray:
    """Rows of ``scipy.stats.uniform(1, 1 + default_noise).rvs(shape, random_state=seed)``, normalised:
    the same numpy calls, so the same numbers (crowd-kit 1.4.2, mace.py, _initialize)."""
    scale = 1 + default_noise
    if not scale >= 0:  # scipy's domain error, at crowd-kit's first draw
        raise ValueError(f"default_noise must be >= -1 (the uniform's scale 1 + default_noise >= 0), "
                         f"got {default_noise!r}")
    if scale == 0:  # scipy returns loc without drawing
        x = np.ones(shape)
    else:
        gen = random_generator(seed, "random_state must be None, an int, a numpy RandomState or Generator, got "
                                     "{seed!r}")
        x = gen.uniform(0.0, 1.0, shape) * np.asarray(scale) + np.asarray(1)
    return x / x.sum(axis=1, keepdims=True)


def _sorted_rank(codes: np.ndarray, uniques: pd.Index, column: pd.Series) -> np.ndarray:
    """Position of each unique (order of appearance) in the order a pandas groupby sorts them."""
    if uniques.is_monotonic_increasing:
        return np.arange(len(uniques), dtype=np.int64)
    sorted_codes, _ = factorize(column, "sorted", str(column.name), "MACE.fit", NAN_IDS)
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[codes] = sorted_codes
    return rank


class MACE:
    """Multi-Annotator Competence Estimation: each worker knows the true label with probability
    ``spamming_[w, 1]``, else spams (``spamming_[w, 0]``) and answers from ``thetas_[w]``. EM or variational
    Bayes (``method``), ``n_restarts`` random starts of ``n_iter`` rounds each, the best log marginal
    likelihood kept. Arguments, defaults and fitted attributes as crowd-kit 1.4.2's ``MACE``; ``n_threads``
    (keyword only, None = all cores) sets the engine's OpenMP threads and does not change the results.

    Fitted: ``probas_`` (DataFrame [tasks, labels], index ``task``), ``labels_`` (Series ``agg_label``),
    ``spamming_`` (ndarray [W, 2]), ``thetas_`` ([W, K]), with ``method="vb"`` ``theta_priors_`` ([W, 2]) and
    ``strategy_priors_`` ([W, K]), ``smoothing_``, and ``log_marginal_likelihood_``. Workers, tasks and labels
    are in order of first appearance in the data.
    """

    def __init__(self, n_restarts: int = 10, n_iter: int = 50, method: str = "vb", smoothing: float = 0.1,
                 default_noise: float = 0.5, alpha: float = 0.5, beta: float = 0.5, random_state: Any = 0,
                 verbose: int = 0, *, n_threads: int | None = None) -> None:
        self.n_restarts = n_restarts
        self.n_iter = n_iter
        self.method = method
        self.smoothing = smoothing
        self.default_noise = default_noise
        self.alpha = alpha
        self.beta = beta
        self.random_state = random_state
        self.verbose = verbose
        self.n_threads = n_threads

    def __repr__(self) -> str:
        names = ("n_restarts", "n_iter", "method", "smoothing", "default_noise", "alpha", "beta", "random_state",
                 "verbose")
        return f"MACE({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    def fit(self, data: pd.DataFrame) -> "MACE":
        """Fits on ``data``, a DataFrame with columns ``task``, ``worker``, ``label``. Returns self."""
        # crowd-kit reads the worker column first, then label, then task: a missing one raises that KeyError
        worker, workers = factorize(data["worker"], "first", "worker", "MACE.fit", NAN_IDS)
        label, classes = factorize(data["label"], "first", "label", "MACE.fit", NAN_IDS)
        task, tasks = factorize(data["task"], "first", "task", "MACE.fit", NAN_IDS)
        crowd = EncodedCrowd(task, worker, label, tasks, workers, classes)
        W, K = crowd.n_workers, crowd.n_classes
        if K == 0:
            raise EmptyCrowdError("MACE.fit: data has no labels (crowd-kit raises ZeroDivisionError here)")
        self.smoothing_ = 0.01 / K
        n_restarts = operator.index(self.n_restarts)
        if n_restarts < 1:
            raise ValueError(f"n_restarts must be >= 1, got {n_restarts}")
        n_iter = max(operator.index(self.n_iter), 0)  # a negative count runs none, as range() does
        variational = self.method == "vb"
        if variational:
            for name in ("alpha", "beta"):
                if not (_checks.is_number(getattr(self, name)) and math.isfinite(getattr(self, name))):
                    raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
            self.theta_priors_ = np.empty((W, 2))
            self.theta_priors_[:, 0] = self.alpha
            self.theta_priors_[:, 1] = self.beta
            self.strategy_priors_ = np.full((W, K), STRATEGY_PRIOR)
        C = require_ext("MACE.fit")
        n_threads = _checks.n_threads(self.n_threads)
        layout = (_sorted_rank(worker, workers, data["worker"]), _sorted_rank(label, classes, data["label"]))
        settings = dict(variational=variational, smoothing=self.smoothing_, alpha=float(self.alpha),
                        beta=float(self.beta), strategy_prior=STRATEGY_PRIOR, n_threads=n_threads)

        def run(spamming: np.ndarray, thetas: np.ndarray, iterations: int) -> dict[str, Any]:
            return C.aggregate.mace(*crowd.arrays(), spamming, thetas, *layout, n_iter=iterations, **settings)

        starts = [(_uniform_start(self.random_state, (W, 2), self.default_noise),
                   _uniform_start(self.random_state, (W, K), self.default_noise)) for _ in range(n_restarts)]
        first = _first_equal(starts)
        if self.verbose > 0:
            best = self._fit_verbose(run, starts, first, n_iter)
        else:  # one engine call over the distinct starts; of equal log-likelihoods the first wins, as in crowd-kit
            distinct = [r for r in range(n_restarts) if first[r] == r]
            best = run(np.stack([starts[r][0] for r in distinct]), np.stack([starts[r][1] for r in distinct]),
                       n_iter)
            best["log_likelihood"] = best["log_likelihood"][best["best"]]

        self.spamming_ = best["spamming"]
        self.thetas_ = best["thetas"]
        self.log_marginal_likelihood_ = float(best["log_likelihood"])
        self.probas_ = probas_frame(best["probas"], tasks, classes.rename(None))  # crowd-kit's columns: unnamed
        self.labels_ = self.probas_.idxmax(axis="columns").rename("agg_label")
        return self

    def _fit_verbose(self, run: Any, starts: list, first: list[int], n_iter: int) -> dict[str, Any]:
        """crowd-kit's progress bars (tqdm): restarts with verbose >= 1, iterations and their log marginal
        likelihood with verbose >= 2 (one engine call per iteration; the same parameters as one call)."""
        from tqdm.auto import trange

        done: dict[int, dict[str, Any]] = {}
        best: dict[str, Any] = {"log_likelihood": -math.inf}
        for r in trange(len(starts), desc="Restarts"):
            if first[r] not in done:
                spamming, thetas = (a[None] for a in starts[r])
                out = run(spamming, thetas, 0 if self.verbose > 1 else n_iter)
                if self.verbose > 1:
                    bar = trange(n_iter, desc="Iterations")
                    for _ in bar:
                        out = run(out["spamming"][None], out["thetas"][None], 1)
                        bar.set_postfix({"log_marginal_likelihood": round(out["log_likelihood"][0], 5)})
                out["log_likelihood"] = out["log_likelihood"][0]
                done[first[r]] = out
            out = done[first[r]]
            if out["log_likelihood"] > best["log_likelihood"]:  # strictly, so NaN never wins (crowd-kit's test)
                best = out
        if "probas" not in best:
            raise ValueError("MACE.fit: no restart reached a finite log marginal likelihood")
        final = run(best["spamming"][None], best["thetas"][None], 0)  # the posteriors under the kept parameters
        final["log_likelihood"] = best["log_likelihood"]
        return final

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:
        """Fits and returns ``labels_``: the most probable label per task (Series ``agg_label``)."""
        return self.fit(data).labels_

    def fit_predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        """Fits and returns ``probas_``: each task's posterior over the labels (rows sum to 1)."""
        return self.fit(data).probas_


def _first_equal(starts: list[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    """For each start, the index of the first start equal to it: equal starts are fitted once (the engine is
    deterministic, so they would end alike)."""
    first: list[int] = []
    for r, (spamming, thetas) in enumerate(starts):
        same = (q for q in dict.fromkeys(first)
                if np.array_equal(starts[q][0], spamming) and np.array_equal(starts[q][1], thetas))
        first.append(next(same, r))
    return first
