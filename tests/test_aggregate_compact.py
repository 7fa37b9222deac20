"""DawidSkene's soft M-step reads compact posterior rows (csrc/aggregate/compact_posteriors.hpp): the classes of a
task with p ≥ tau, or the full row when more than kCap classes pass. Checked here against a plain numpy
Dawid–Skene with the same pseudo-counts and update order, on crowds where both paths are taken."""

from __future__ import annotations

import numpy as np
import pytest

from luab_fast.aggregate import DawidSkene, make_crowd
from luab_fast.aggregate.dawid_skene import dirichlet_prior

KCAP = 4  # CompactPosteriors<TP>::kCap
CLIP = 1e-10  # crowd-kit's _EPS


def reference_dawid_skene(task, worker, label, T, W, K, alpha, n_iter):
    """Soft EM in crowd-kit's order (MV init; prior + M; then (E, prior, M) per iteration), dense throughout."""
    post = np.zeros((T, K))
    np.add.at(post, (task, label), 1.0)
    post = post / post.sum(1, keepdims=True)
    observed = np.zeros((W, K), bool)
    observed[worker, label] = True
    alpha = np.zeros((K, K)) if alpha is None else alpha  # [true y, observed z]

    def m_step(post):
        counts = np.zeros((W, K, K))  # [w, z, y]
        np.add.at(counts, (worker, label), post[task])
        v = counts + alpha.T[None]
        v = np.where(observed[:, :, None], np.maximum(v, CLIP), v)
        return v / v.sum(1, keepdims=True)

    prior = post.mean(0)
    theta = m_step(post)
    for _ in range(n_iter):
        logp = np.tile(np.log(np.maximum(prior, CLIP)), (T, 1))
        np.add.at(logp, task, np.log(theta[worker, label]))
        p = np.exp(logp - logp.max(1, keepdims=True))
        post = p / p.sum(1, keepdims=True)
        prior = post.mean(0)
        theta = m_step(post)
    return post


@pytest.mark.parametrize("prior", [(0.0, 0.0), (0.01, 0.0), (2.0, 1.0)], ids=["crowd-kit", "default", "strong"])
@pytest.mark.parametrize("precision,atol", [("float64", 1e-9), ("float32", 2e-5)])
def test_matches_dense_numpy_dawid_skene(prior, precision, atol):
    # near-chance workers and many labels per task keep some posteriors spread over > kCap classes
    c = make_crowd(400, 25, 9, 12, seed=7, acc_low=0.1, acc_high=0.5)
    alpha = dirichlet_prior(12, prior[0], prior[1])
    # tol=0 stops only if the objective fails to rise; the reference runs as many iterations as ours did
    ours = DawidSkene(prior=prior[0], prior_diag=prior[1], n_iter=6, tol=0.0, precision=precision)
    ours.fit(c.arrays, n_tasks=400, n_workers=25, n_classes=12)
    assert ours.n_iter_ >= 3
    ref = reference_dawid_skene(c.task, c.worker, c.label, 400, 25, 12, alpha, ours.n_iter_)
    got = np.asarray(ours.probas_, dtype=np.float64)
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)
    # which M-step path the rows took: compact (≤ kCap classes above tau) or full; the three priors span both
    spread = ((ref > 1e-12).sum(1) > KCAP).mean()
    expected = {"crowd-kit": (0.0, 0.5), "default": (0.05, 0.95), "strong": (0.5, 1.0)}[
        {(0.0, 0.0): "crowd-kit", (0.01, 0.0): "default", (2.0, 1.0): "strong"}[prior]]
    assert expected[0] <= spread <= expected[1], f"{spread:.2f} of rows are dense, expected within {expected}"
