"""The efficient-annotation seed's EM step, ported loop for loop from its description
(../shared/docs/aggregation.md §A, "EMOptimizer" and "EM mathematics of the Bayes aggregator"): the baseline of
benchmarks/bench_annotate.py.

Not the seed's code (it is not vendored here) but its cost structure: the M-step loops over workers × all
annotations in Python — O(M·N_ann) per EM iteration — and the E-step is a Python loop over images with a numpy
row per annotation. The arithmetic is the seed's: uniform class prior log(1/K + 1e-8), log(p + 1e-8) per label
and per learner probability, hard counts from the argmax (first maximum; the seed breaks ties with 1e-8 noise),
Dirichlet posterior-mean confusion rows, soft/hard stopping, a final E-step. ``BayesAggregator`` must give the
same posteriors (checked by the benchmark before timing).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def seed_bayes_em(task: np.ndarray, worker: np.ndarray, label: np.ndarray, n_tasks: int, n_workers: int,
                  n_classes: int, alpha: np.ndarray, learner_prob: np.ndarray | None = None, max_iter: int = 10,
                  likelihood_epsilon: float = 1e-3, criterion: str = "soft") -> tuple[np.ndarray, int]:
    """Returns (posteriors [T, K], EM iterations run)."""
    K = n_classes
    annotations = list(zip(task.tolist(), worker.tolist(), label.tolist()))  # the AnnotationHolder's tuples
    per_image: dict[int, list[tuple[int, int]]] = {}
    for i, w, z in annotations:
        per_image.setdefault(i, []).append((w, z))
    alpha = np.broadcast_to(np.asarray(alpha, np.float64), (n_workers, K, K))
    log_class_prior = np.full(K, np.log(1.0 / K + EPS))
    log_learner = np.log(learner_prob + EPS) if learner_prob is not None else None

    def theta_of(counts: np.ndarray) -> np.ndarray:
        m = alpha + counts
        return m / m.sum(2, keepdims=True)

    def e_step(theta: np.ndarray) -> np.ndarray:
        log_theta = np.log(theta + EPS)
        post = np.empty((n_tasks, K))
        for i in range(n_tasks):  # the seed's Python loop over images
            lp = log_class_prior.copy()
            if log_learner is not None:
                lp += log_learner[i]
            for w, z in per_image.get(i, ()):
                lp += log_theta[w, :, z]
            p = np.exp(lp - lp.max())
            post[i] = p / p.sum()
        return post

    theta = theta_of(np.zeros((n_workers, K, K)))  # counts reset to zero: each online step starts from the prior
    prev_lik, prev_yhat, n_iter = None, None, 0
    for _ in range(max_iter):
        yhat = e_step(theta).argmax(1)
        counts = np.zeros((n_workers, K, K))
        for w in range(n_workers):  # the seed's M-step: every worker scans every annotation
            for i, w_i, z in annotations:
                if w_i == w:
                    counts[w, yhat[i], z] += 1.0
        theta = theta_of(counts)
        lik = float(np.mean([theta[w, yhat[i], z] for i, w, z in annotations]))
        n_iter += 1
        if prev_lik is not None:
            if (np.array_equal(yhat, prev_yhat) if criterion == "hard" else abs(prev_lik - lik) < likelihood_epsilon):
                break
        prev_lik, prev_yhat = lik, yhat
    return e_step(theta), n_iter
