"""M-MSR (Ma & Olshevsky: "Adversarial Crowdsourcing Through Robust Rank-One Matrix Completion", NeurIPS 2020) with
crowd-kit 1.4.2's API and results; the covariation matrix, the M-MSR iterations and the weighted vote run in C++
(csrc/aggregate/mmsr.cpp).

crowd-kit's fit is reproduced step for step: the workers' covariation matrix (agreement on common tasks, a
worker's last answer to a task counting), the random start ``scipy.stats.uniform.rvs(size=(W, 1),
random_state=random_state)`` for both factors (drawn here with the same numpy generator calls), each iteration's
trimmed means summed as numpy sums them, then the scale, the sign step (the signs of the eigenvector of the
smallest eigenvalue of crowd-kit's signed-graph matrix, by scipy's ARPACK as in crowd-kit, on a reduced problem of
2 × the workers instead of up to workers²/2 nodes: ``_signed``), the clipping and the skills
``log((K−1) p / (1 − p))``. ``predict`` is crowd-kit's skill-weighted ``MajorityVote``, sums as pandas takes them.
The matrix stays sparse: a pair of workers without a common task is never stored (crowd-kit builds W × T and
W × W dense arrays; ``_observation_matrix``, ``_covariation_matrix`` and ``_n_common_tasks`` are built from the
sparse form only when read). On the real crowds of the tests, skills_, scores_ and labels_ equal crowd-kit's bit
for bit, after the same number of iterations.

Edge cases as crowd-kit: a missing column raises pandas' KeyError; empty data raises ValueError; a single label
raises ZeroDivisionError (here ``SingleLabelError``, also a ValueError); a single worker fits; crowds whose sign
step degenerates (two workers, or two valid ones) raise ValueError as crowd-kit's does; ``predict`` with a worker
that has no skill raises crowd-kit's "Skill value is missing" ValueError. Deliberately different: NaN or None in a
column raise ValueError (crowd-kit raises KeyError from its dict lookups).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import pandas as pd

from .._ext import require_ext
from ..aggregate import _checks
from ._frame import (
    COLUMNS,
    SingleLabelError,
    empty_labels,
    encode,
    labels_series,
    probas_frame,
    random_generator,
    select_columns,
    worker_series,
)

__all__ = ["MMSR", "SingleLabelError"]


def _uniform(random_state: Any, n: int) -> np.ndarray:
    """scipy.stats.uniform.rvs(size=(n, 1), random_state=random_state) without importing scipy.stats: the same
    generator (scipy's check_random_state) and the same call."""
    gen = random_generator(random_state, "{seed!r} cannot be used to seed a numpy.random.RandomState instance")
    return gen.uniform(0.0, 1.0, (n, 1))


class MMSR:
    """crowd-kit's ``MMSR``: same constructor (the private matrices and mappings included), ``fit``, ``predict``,
    ``predict_score``, ``fit_predict``, ``fit_predict_score``. Fitted: ``skills_`` (Series ``skill`` by
    ``worker``, first appearance), ``loss_history_``; after a predict, ``labels_`` and ``scores_`` (tasks
    sorted, labels sorted). ``n_threads`` (keyword only): None for all cores; results do not depend on it."""

    def __init__(self, n_iter: int = 10000, tol: float = 1e-10, random_state: int | None = 0,
                 observation_matrix: np.ndarray | None = None, covariation_matrix: np.ndarray | None = None,
                 n_common_tasks: np.ndarray | None = None, n_workers: int = 0, n_tasks: int = 0, n_labels: int = 0,
                 labels_mapping: dict[Any, int] | None = None, workers_mapping: dict[Any, int] | None = None,
                 tasks_mapping: dict[Any, int] | None = None, *, n_threads: int | None = None) -> None:
        self.n_iter = n_iter
        self.tol = tol
        self.random_state = random_state
        # crowd-kit's attrs fields (init arguments without the underscore); fit replaces them all
        self._given = {"observation_matrix": np.array([]) if observation_matrix is None else observation_matrix,
                       "covariation_matrix": np.array([]) if covariation_matrix is None else covariation_matrix,
                       "n_common_tasks": np.array([]) if n_common_tasks is None else n_common_tasks}
        self._n_workers = n_workers
        self._n_tasks = n_tasks
        self._n_labels = n_labels
        self._labels_mapping = {} if labels_mapping is None else labels_mapping
        self._workers_mapping = {} if workers_mapping is None else workers_mapping
        self._tasks_mapping = {} if tasks_mapping is None else tasks_mapping
        self._fit: dict[str, Any] | None = None
        self.n_threads = n_threads

    def __repr__(self) -> str:
        return f"MMSR(n_iter={self.n_iter!r}, tol={self.tol!r}, random_state={self.random_state!r})"

    # -- crowd-kit interface ---------------------------------------------------------------------------------
    def fit(self, data: pd.DataFrame) -> "MMSR":
        """Fits the workers' skills on ``data`` (a DataFrame with columns ``task``, ``worker``, ``label``)."""
        threads = _checks.n_threads(self.n_threads)
        n_iter = max(operator.index(self.n_iter), 0)  # crowd-kit's range(n_iter)
        crowd = encode(select_columns(data), owner="MMSR")
        T, W, K = crowd.n_tasks, crowd.n_workers, crowd.n_classes
        if W == 0:
            raise ValueError("MMSR.fit: data has no rows (crowd-kit: zero-size array to reduction operation minimum "
                             "which has no identity)")
        if K == 1:
            raise SingleLabelError(f"MMSR.fit: every answer is {crowd.classes[0]!r}; M-MSR needs at least two distinct "
                                   "labels (it divides by n_labels - 1; crowd-kit raises ZeroDivisionError)")
        u0, v0 = _uniform(self.random_state, W), _uniform(self.random_state, W)

        C = require_ext("MMSR.fit")
        out = C.aggregate.mmsr(*crowd.arrays(), np.ascontiguousarray(u0[:, 0]), np.ascontiguousarray(v0[:, 0]),
                               min(n_iter, 2**31 - 1), float(self.tol), threads)
        self._fit = {"out": out, "crowd": crowd}
        self._n_workers, self._n_tasks, self._n_labels = W, T, K
        self._labels_mapping = {value: i + 1 for i, value in enumerate(crowd.classes.to_numpy())}
        self._workers_mapping = {value: i for i, value in enumerate(crowd.workers.to_numpy())}
        self._tasks_mapping = {value: i for i, value in enumerate(crowd.tasks.to_numpy())}
        self._sparsity = float(out["min_partners"])
        self.loss_history_ = [float(x) for x in out["loss_history"]]
        self.skills_ = worker_series(self._skills(out, T, K), crowd.workers)
        return self

    def predict(self, data: pd.DataFrame) -> pd.Series:
        """The skill-weighted majority vote's labels on ``data`` (Series ``agg_label`` by ``task``)."""
        self._apply(data)
        return self.labels_

    def predict_score(self, data: pd.DataFrame) -> pd.DataFrame:
        """The skill-weighted vote shares on ``data`` (task × label DataFrame)."""
        self._apply(data)
        return self.scores_

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:
        return self.fit(data).predict(data)

    def fit_predict_score(self, data: pd.DataFrame) -> pd.DataFrame:
        return self.fit(data).predict_score(data)

    # -- the skills (crowd-kit 1.4.2, m_msr.py: _m_msr after its loop) ----------------------------------------
    @staticmethod
    def _skills(out: dict[str, Any], n_tasks: int, n_labels: int) -> np.ndarray:
        u, v = out["u"].reshape(-1, 1), out["v"].reshape(-1, 1)
        s_abs = u / np.sqrt(np.linalg.norm(u) / np.linalg.norm(v))
        s = _signed(out, s_abs)
        s = np.minimum(s, 1 - 1.0 / np.sqrt(n_tasks))
        s = np.maximum(s, -1 / (n_labels - 1) + 1.0 / np.sqrt(n_tasks))
        p = (s * (n_labels - 1) / n_labels + 1 / n_labels).ravel()
        return np.log(p * (n_labels - 1) / (1 - p))

    # -- predict: crowd-kit's MajorityVote(skills=skills_) ----------------------------------------------------
    def _apply(self, data: pd.DataFrame) -> None:
        if not hasattr(self, "skills_"):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'skills_'")
        threads = _checks.n_threads(self.n_threads)
        frame = select_columns(data)
        if frame.empty:  # pandas' empty group-by results, their index dtypes included (no engine call)
            joined = frame[list(COLUMNS)].join(self.skills_, on="worker")
            self.scores_ = joined.groupby(["task", "label"])["skill"].sum().unstack("label", fill_value=0)
            self.labels_ = empty_labels()
            return
        crowd = encode(frame, tasks="sorted", workers="first", labels="sorted", owner="MMSR")
        skills = self.skills_.reindex(crowd.workers).to_numpy(np.float64)
        missing = int(np.isnan(skills)[crowd.worker].sum())
        if missing:
            raise ValueError(f"Skill value is missing in {missing} assignments. Specify skills for every used worker "
                             "or use different 'on_unknown_skill' value.")
        # groupby(["task", "label"])'s ids: pandas' sum depends on their order
        group = crowd.task * max(crowd.n_classes, 1) + crowd.label
        in_runs = bool(np.all(group[1:] >= group[:-1]))
        C = require_ext("MMSR.predict")
        shares = C.aggregate.weighted_vote_shares(*crowd.arrays(), np.ascontiguousarray(skills), in_runs, threads)
        self.scores_ = probas_frame(shares, crowd.tasks, crowd.classes)
        if np.isnan(shares).any():  # pandas' idxmax skips NaN (and refuses all-NaN rows): its own call decides
            self.labels_ = self.scores_.idxmax(axis="columns").rename("agg_label")
        else:  # idxmax's first maximum, without pandas' copies of the table
            self.labels_ = labels_series(C.aggregate.argmax_rows(shares, threads), crowd.tasks, crowd.classes)

    # -- crowd-kit's private fields, dense, built on demand from the sparse fit -------------------------------
    def _pair_matrix(self, given: str, values: str, elsewhere: str | None) -> np.ndarray:
        """A W × W field: as given to __init__ before a fit, else the fit's ``values`` at each stored pair of
        workers and its ``elsewhere`` (0 for None) at the pairs without a common task."""
        if self._fit is None:
            return self._given[given]
        out, W = self._fit["out"], self._n_workers
        dense = np.full((W, W), 0.0 if elsewhere is None else out[elsewhere])
        dense[_pair_rows(out), out["partner"]] = out[values]
        return dense

    @property
    def _covariation_matrix(self) -> np.ndarray:
        return self._pair_matrix("covariation_matrix", "cov", "unobserved_cov")

    @property
    def _n_common_tasks(self) -> np.ndarray:
        return self._pair_matrix("n_common_tasks", "common", None)

    @property
    def _observation_matrix(self) -> np.ndarray:
        if self._fit is None:
            return self._given["observation_matrix"]
        crowd = self._fit["crowd"]
        cell = crowd.worker * self._n_tasks + crowd.task
        _, from_end = np.unique(cell[::-1], return_index=True)
        last = len(cell) - 1 - from_end  # a worker's last answer to a task is the one crowd-kit keeps
        dense = np.zeros((self._n_workers, self._n_tasks))
        dense[crowd.worker[last], crowd.task[last]] = crowd.label[last] + 1
        return dense

    @_observation_matrix.setter
    def _observation_matrix(self, value: np.ndarray) -> None:
        self._given["observation_matrix"] = value

    @_covariation_matrix.setter
    def _covariation_matrix(self, value: np.ndarray) -> None:
        self._given["covariation_matrix"] = value

    @_n_common_tasks.setter
    def _n_common_tasks(self, value: np.ndarray) -> None:
        self._given["n_common_tasks"] = value


def _pair_rows(out: dict[str, Any]) -> np.ndarray:
    """The row (worker) of each stored pair of the sparse covariation matrix."""
    ptr = out["pair_ptr"]
    return np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))


def _signed(out: dict[str, Any], s_abs: np.ndarray) -> np.ndarray:
    """crowd-kit 1.4.2's _sign_determination_valid, on the sparse matrix. Its graph A joins the k workers whose
    covariation row sum is nonzero ("valid"): a worker to each worker it covaries negatively with (itself and the
    workers it shares no task with included), and to one new node per positively covarying pair (that node's
    only two edges). The signs of the eigenvector of D⁻¹A + I for the eigenvalue of smallest magnitude (the
    smallest: the spectrum lies in [0, 2]), oriented so that most valid workers are positive, sign s_abs; other
    workers get 0.

    crowd-kit builds A densely, with up to k²/2 new nodes. Here they are eliminated: with S = D^-1/2 A D^-1/2 (so
    D⁻¹A + I has the eigenvectors D^-1/2 z of I + S, the same signs), a new node's entry is fixed by its two
    workers' entries, and the workers' part z of the eigenvector with eigenvalue 1 − μ solves the quadratic
    eigenproblem (μ² I + μ S_ww − G) z = 0, G = S_nwᵀ S_nw: μ is the largest real eigenvalue of the 2k × 2k
    linearisation [[0, I], [G, −S_ww]] (ARPACK, as crowd-kit's eigs), and z its eigenvector's first half."""
    n = len(s_abs)
    valid = np.flatnonzero(out["row_sums"] != 0)
    k = len(valid)
    local = np.full(n, -1)
    local[valid] = np.arange(k)
    rows, cols, cov = local[_pair_rows(out)], local[out["partner"]], out["cov"]
    keep = (rows >= 0) & (cols >= 0)
    rows, cols, cov = rows[keep], cols[keep], cov[keep]
    positive = cov > 0  # both directions of each pair: one new node per pair
    m = int(positive.sum()) // 2
    if k + m < 3:
        return _signed_tiny(k, m, n, valid, s_abs)
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    # worker-worker block of A: 1 where C < 0 (the diagonal and pairs without a common task too) = all ones − E
    nonneg = cov >= 0
    E = sp.csr_matrix((np.ones(int(nonneg.sum())), (rows[nonneg], cols[nonneg])), shape=(k, k))
    half_P = sp.csr_matrix((np.full(2 * m, 0.5), (rows[positive], cols[positive])), shape=(k, k))
    n_positive = np.bincount(rows[positive], minlength=k).astype(np.float64)
    scale = 1.0 / np.sqrt(k - np.asarray(E.sum(axis=1)).ravel() + n_positive)  # D^-1/2 (a new node's degree: 2)

    def matvec(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x).ravel()
        z, y = x[:k] * scale, x[k:] * scale
        g = (half_P @ z + 0.5 * n_positive * z) * scale  # G z
        s = (y.sum() - E @ y) * scale  # S_ww y
        return np.concatenate([x[k:], g - s])

    op = sla.LinearOperator((2 * k, 2 * k), matvec=matvec, dtype=np.float64)
    # a fixed start vector: ARPACK's own random start (crowd-kit passes none) advances with every call in the process,
    # so on a crowd whose eigenvalue is tied the signs changed from fit to fit; a fixed one makes a fit reproducible
    # and changes nothing where the eigenvector is unique
    start = np.random.default_rng(0).uniform(0.5, 1.5, 2 * k)
    _, vectors = sla.eigs(op, 1, which="LR", v0=start)
    signs = np.sign(vectors.real)[:k]
    s_sign = np.zeros((n, 1))
    s_sign[valid] = np.sign(np.sum(signs)) * s_abs[valid] * signs
    return s_sign


def _signed_tiny(k: int, m: int, n: int, valid: np.ndarray, s_abs: np.ndarray) -> np.ndarray:
    """A sign graph of fewer than 3 nodes: ARPACK needs 3, so crowd-kit's eigs falls back to scipy.linalg.eig and
    gets every eigenvector; only a single node (one valid worker, eigenvector [1]) survives its next step."""
    if k + m == 1:
        s_sign = np.zeros((n, 1))
        s_sign[valid] = s_abs[valid]
        return s_sign
    raise ValueError(f"MMSR.fit: the sign step has {k + m} node(s) ({k} worker(s) whose covariation row sums are "
                     f"nonzero, {m} positive pair(s)); it needs 1 or at least 3. crowd-kit 1.4.2 fails here too "
                     f"(shape mismatch: value array of shape ({k},{k + m}) could not be broadcast to indexing result "
                     f"of shape ({k},1))")
