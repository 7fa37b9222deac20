"""BayesAggregator: the efficient-annotation seed's hard-EM aggregator (Liao, Kar, Fidler, CVPR 2021).

Checked against (1) an independent pure-numpy re-implementation of the seed's loop, (2) a 2-task, 2-worker
example worked out by hand, (3) the priors built from the seed's real AMT counts, and (4) the seed's
structured-noise worker simulation on its 19-class Dog group.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fixtures.aggregate import assert_close

from luab_fast.aggregate import BayesAggregator, MajorityVote, homogeneous_prior, make_crowd, predefined_prior

TOL = {"reference": 1e-12, "hand": 1e-12, "hand_no_eps": 1e-7, "prior_rel": 2e-3, "vs_mv": 0.03}
EPS = 1e-8  # the seed adds this inside every log


# -- an independent reference: the seed's loop, written plainly ----------------------------------------
TIE_TOLERANCE = 1e-12  # csrc/aggregate/em_kernels.hpp kArgmaxTieTolerance


def tied_argmax(post):
    """Lowest class within TIE_TOLERANCE (relative) of the row maximum: classes that tie in exact arithmetic stay
    tied whatever exp/log rounding did to them (the seed breaks ties with random 1e-8 noise instead)."""
    return (post >= post.max(1, keepdims=True) * (1.0 - TIE_TOLERANCE)).argmax(1)


def reference_bayes(task, worker, label, T, W, K, alpha, learner=None, max_iter=10, criterion="soft",
                    likelihood_epsilon=1e-3):
    """Seed algorithm (../shared/docs/aggregation.md, "EM mathematics of the Bayes aggregator"). Returns
    (posterior [T, K], theta [W, y, z], z-likelihood per iteration, converged)."""
    alpha = np.broadcast_to(np.asarray(alpha, np.float64), (W, K, K))

    def theta_of(counts):  # Dirichlet posterior mean of each confusion row (alpha + N)[y, :] / sum
        m = alpha + counts
        return m / m.sum(2, keepdims=True)

    def e_step(theta):  # log(1/K + eps) [+ log(learner + eps)] + sum over labels log(theta[w, y, z] + eps)
        logp = np.full((T, K), np.log(1.0 / K + EPS))
        if learner is not None:
            logp = logp + np.log(learner + EPS)
        for t, w, z in zip(task, worker, label):
            logp[t] += np.log(theta[w, :, z] + EPS)
        p = np.exp(logp - logp.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    theta = theta_of(np.zeros((W, K, K)))  # counts start at 0: the prior alone
    liks, prev_lik, prev_yhat, converged = [], None, None, False
    for _ in range(max_iter):
        yhat = tied_argmax(e_step(theta))
        counts = np.zeros((W, K, K))
        np.add.at(counts, (worker, yhat[task], label), 1.0)  # hard M-step: N_w[argmax, z] += 1
        theta = theta_of(counts)
        lik = theta[worker, yhat[task], label].mean()  # mean over labels of p(z | argmax y, w)
        liks.append(lik)
        if prev_lik is not None:  # both stopping rules apply from the 2nd iteration on
            if (np.array_equal(yhat, prev_yhat) if criterion == "hard" else abs(prev_lik - lik) < likelihood_epsilon):
                converged = True
                break
        prev_lik, prev_yhat = lik, yhat
    return e_step(theta), theta, liks, converged  # a final E-step with the last confusion matrices


def _random_crowd(seed, T=30, W=6, K=4, extra_tasks=3, extra_workers=1):
    """Labels on tasks 0..T-1 by workers 0..W-1, plus unlabelled tasks and idle workers."""
    rng = np.random.default_rng(seed)
    n = 3 * T
    arrays = (rng.integers(0, T, n), rng.integers(0, W, n), rng.integers(0, K, n))
    return arrays, T + extra_tasks, W + extra_workers, K


CROWDS = {
    "synthetic 40x6x3 K=3": lambda: (make_crowd(40, 6, 3, 3, seed=7).arrays, 40, 6, 3),
    "synthetic 25x5x4 K=5": lambda: (make_crowd(25, 5, 4, 5, seed=8).arrays, 25, 5, 5),
    "random with unlabelled tasks and idle workers": lambda: _random_crowd(9),
    "random K=2": lambda: _random_crowd(10, T=20, W=4, K=2),
}


def _prior(kind, W, K, seed):
    if kind == "shared predefined":
        return predefined_prior(K, strength=1.0)
    if kind == "shared homogeneous":
        return homogeneous_prior(np.random.default_rng(seed).integers(0, 9, (K, K)) + 5 * np.eye(K), strength=0.3)
    return np.random.default_rng(seed).uniform(0.2, 3.0, (W, K, K))  # per worker [W, K, K]


@pytest.mark.parametrize("learner", [False, True], ids=["no learner", "learner_prob"])
@pytest.mark.parametrize("criterion", ["soft", "hard"])
@pytest.mark.parametrize("prior_kind", ["shared predefined", "shared homogeneous", "per-worker"])
@pytest.mark.parametrize("name", CROWDS)
def test_matches_numpy_reference(name, prior_kind, criterion, learner):
    (task, worker, label), T, W, K = CROWDS[name]()
    alpha = _prior(prior_kind, W, K, seed=len(name))
    lp = np.random.default_rng(3).uniform(0.01, 1.0, (T, K)) if learner else None
    for max_iter, eps in [(10, 1e-3), (10, 0.0), (1, 1e-3), (0, 1e-3)]:
        m = BayesAggregator(prior=alpha, criterion=criterion, max_iter=max_iter, likelihood_epsilon=eps).fit(
            (task, worker, label), n_tasks=T, n_workers=W, n_classes=K, learner_prob=lp)
        post, theta, liks, converged = reference_bayes(task, worker, label, T, W, K, alpha, lp, max_iter, criterion,
                                                       eps)
        what = f"{name}, {prior_kind}, {criterion}, learner={learner}, max_iter={max_iter}, eps={eps}"
        assert m.n_iter_ == len(liks) and m.converged_ == converged, (
            f"{what}: ran {m.n_iter_} iterations (converged={m.converged_}), reference {len(liks)} ({converged})")
        assert_close(m.posteriors_, post, TOL["reference"], f"{what}: posteriors_", index=range(T))
        assert_close(m.loss_history_, liks, TOL["reference"], f"{what}: z-likelihood per iteration")
        assert_close(m.confusion_, theta, TOL["reference"], f"{what}: confusion_ [W, true, observed]")


# -- by hand ----------------------------------------------------------------------------------------------
# Two tasks, two workers, K=2. Labels: task 0 <- (w0: 0, w1: 0), task 1 <- (w0: 0, w1: 1).
# Per-worker priors (rows = true y, columns = given z):
#   w0: [[2, .5], [.5, 2]]  -> p(z|y) = 0.8 on the diagonal, 0.2 off it
#   w1: [[4, .5], [.5, 4]]  -> 8/9 on the diagonal, 1/9 off it
HAND = (np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([0, 0, 0, 1]))
HAND_PRIOR = np.array([[[2.0, 0.5], [0.5, 2.0]], [[4.0, 0.5], [0.5, 4.0]]])


def _post0(num, den):
    """p(y=0) = Π(num + eps) / (Π(num + eps) + Π(den + eps)): the seed's +1e-8 inside each log (the uniform
    class prior log(1/2 + eps) is the same for both classes and cancels)."""
    a, b = np.prod(np.add(num, EPS)), np.prod(np.add(den, EPS))
    return a / (a + b)


def test_hand_example_prior_only():
    # max_iter=0: one E-step with N = 0, i.e. the prior alone.
    #   task 0: p(0) ∝ 0.8 · 8/9, p(1) ∝ 0.2 · 1/9  -> p(0) = 6.4 / (6.4 + 0.2) = 32/33
    #   task 1: p(0) ∝ 0.8 · 1/9, p(1) ∝ 0.2 · 8/9  -> p(0) = 0.8 / (0.8 + 1.6) = 1/3
    m = BayesAggregator(prior=HAND_PRIOR, max_iter=0).fit(HAND)
    assert_close(m.posteriors_[:, 0], [32 / 33, 1 / 3], TOL["hand_no_eps"], "prior-only posterior (exact fractions)")
    expected = [_post0([0.8, 8 / 9], [0.2, 1 / 9]), _post0([0.8, 1 / 9], [0.2, 8 / 9])]
    assert_close(m.posteriors_[:, 0], expected, TOL["hand"], "prior-only posterior with the seed's eps")
    assert m.n_iter_ == 0 and m.loss_history_ == [], f"max_iter=0 ran {m.n_iter_} iterations"


def test_hand_example_one_iteration_and_convergence():
    # Iteration 1: E-step as above -> argmax = [0, 1]. Hard M-step, N_w[argmax, z] += 1:
    #   w0: (y=0, z=0) from task 0, (y=1, z=0) from task 1 -> rows [2+1, .5] = [6/7, 1/7], [.5+1, 2] = [3/7, 4/7]
    #   w1: (y=0, z=0), (y=1, z=1)                          -> rows [4+1, .5] = [10/11, 1/11], [.5, 4+1] = [1/11, 10/11]
    # z-likelihood = mean(θ_w0[0,0], θ_w1[0,0], θ_w0[1,0], θ_w1[1,1]) = (6/7 + 10/11 + 3/7 + 10/11) / 4
    # Final E-step: task 0: p(0) ∝ 6/7 · 10/11 = 60/77, p(1) ∝ 3/7 · 1/11 = 3/77  -> 60/63 = 20/21
    #               task 1: p(0) ∝ 6/7 · 1/11 = 6/77,   p(1) ∝ 3/7 · 10/11 = 30/77 -> 6/36 = 1/6
    expected = np.array([_post0([6 / 7, 10 / 11], [3 / 7, 1 / 11]), _post0([6 / 7, 1 / 11], [3 / 7, 10 / 11])])
    lik1 = (6 / 7 + 10 / 11 + 3 / 7 + 10 / 11) / 4
    m = BayesAggregator(prior=HAND_PRIOR, max_iter=1).fit(HAND)
    assert_close(m.posteriors_[:, 0], [20 / 21, 1 / 6], TOL["hand_no_eps"], "1 iteration (exact fractions)")
    assert_close(m.posteriors_[:, 0], expected, TOL["hand"], "1 iteration with the seed's eps")
    assert_close(m.loss_history_, [lik1], TOL["hand"], "z-likelihood after iteration 1")
    assert_close(m.counts_, [[[1, 0], [1, 0]], [[1, 0], [0, 1]]], 0.0, "hard counts [W, true, observed]")
    # Iteration 2 finds the same argmax [0, 1], hence the same counts and likelihood: both rules stop there.
    for criterion in ("soft", "hard"):
        m = BayesAggregator(prior=HAND_PRIOR, criterion=criterion).fit(HAND)
        assert m.n_iter_ == 2 and m.converged_, f"{criterion}: n_iter_={m.n_iter_}, converged_={m.converged_}"
        assert_close(m.loss_history_, [lik1, lik1], TOL["hand"], f"{criterion}: z-likelihood history")
        assert_close(m.posteriors_[:, 0], expected, TOL["hand"], f"{criterion}: converged posterior")
        assert_close(m.risk_, 1 - np.maximum(expected, 1 - expected), TOL["hand"], f"{criterion}: risk_")


# -- priors ---------------------------------------------------------------------------------------------
def test_homogeneous_prior_formula():
    cm = np.array([[8.0, 2, 0], [1, 6, 3], [0, 0, 10]])  # row sums 10; mean diagonal 8; off (10 - 8)/2 = 1
    assert_close(homogeneous_prior(cm, strength=10.0), [[80, 10, 10], [10, 80, 10], [10, 10, 80]], 1e-12,
                 "homogeneous_prior")
    assert_close(homogeneous_prior(cm, strength=1.0), np.eye(3) * 7 + 1, 1e-12, "strength 1")


def test_predefined_prior_formula():
    expected = np.full((4, 4), 10 * 1.0 / 4)
    np.fill_diagonal(expected, 10 * 2.0)  # diagonal pos_count, off-diagonal neg_count / K, times strength
    assert_close(predefined_prior(4), expected, 1e-12, "predefined_prior(4)")


def test_global_cm_builds_the_homogeneous_prior():
    (task, worker, label), T, W, K = CROWDS["synthetic 40x6x3 K=3"]()
    cm = np.array([[30.0, 5, 2], [4, 25, 6], [1, 3, 40]])
    a = BayesAggregator(global_cm=cm, strength=0.5).fit((task, worker, label))
    b = BayesAggregator(prior=homogeneous_prior(cm, 0.5)).fit((task, worker, label))
    assert np.array_equal(a.posteriors_, b.posteriors_), "global_cm= must equal prior=homogeneous_prior(global_cm)"
    c = BayesAggregator().fit((task, worker, label))
    d = BayesAggregator(prior=predefined_prior(3)).fit((task, worker, label))
    assert np.array_equal(c.posteriors_, d.posteriors_), "the default prior must be predefined_prior(K)"


@pytest.fixture(scope="module")
def amt(shared_data):
    """The seed's real AMT data: wnids, {group: [W_g, 100, 100] counts}, and the class groups."""
    root = shared_data / "amt_workers"
    info = json.loads((root / "group_workers.json").read_text())
    groups = [g.split() for g in (root / "groups.txt").read_text().strip().split("\n\n")]
    mats = {k: np.asarray(v, np.float64) for k, v in info["group_workers"].items()}
    assert sum(len(v) for v in mats.values()) == 58 and [len(g) for g in groups] == [19, 18, 13, 19, 16, 15]
    return info["imagenet100"], mats, groups


@pytest.mark.parametrize("subset, diag, off, acc", [("imagenet100", 162.0, 0.707, 0.698), ("dog", 122.6, 8.39, 0.448)])
def test_amt_prior_matches_the_paper_numbers(amt, subset, diag, off, acc):
    wnids, mats, groups = amt
    pooled = sum(v.sum(0) for v in mats.values())
    if subset == "dog":
        keep = [wnids.index(w) for w in groups[0]]
        pooled = pooled[np.ix_(keep, keep)]
    alpha = homogeneous_prior(pooled)  # strength 10, the seed's default
    K = pooled.shape[0]
    got = (alpha[0, 0], alpha[0, 1], alpha[0, 0] / alpha[0].sum())
    assert np.allclose(np.diag(alpha), got[0]) and np.allclose(alpha[~np.eye(K, dtype=bool)], got[1])
    assert_close(np.divide(got, (diag, off, acc)), np.ones(3), TOL["prior_rel"],
                 f"{subset} prior (diag, off, accuracy) {tuple(round(g, 4) for g in got)} vs doc {(diag, off, acc)}")


# -- the seed's structured-noise workers on the Dog group --------------------------------------------
def simulate_structured_worker(rng, mats, wnids, groups, keep, noise=0.03):
    """StructuredNoiseWorker: per group one random real worker; Σ_groups (pooled + 10 × that worker);
    restricted to ``keep`` and row-normalised; then ``noise`` of each row's in-group mass spread uniformly
    over the classes outside the true class's group (none for a single-group subset)."""
    cm = sum(v.sum(0) + 10 * v[rng.integers(len(v))] for v in mats.values())
    m = cm[np.ix_(keep, keep)]
    m = m / (m.sum(1, keepdims=True) + 1e-8)
    group = np.array([next(g for g, ws in enumerate(groups) if wnids[i] in ws) for i in keep])
    for i in range(len(keep)):
        same = group == group[i]
        if (~same).any():
            mass = m[i, same].sum()
            m[i, same] *= 1 - noise
            m[i, ~same] += mass * noise / (~same).sum()
    return m


def test_structured_noise_dog_simulation(amt):
    wnids, mats, groups = amt
    keep = [wnids.index(w) for w in groups[0]]
    K, W, T, L = len(keep), 20, 2000, 3
    rng = np.random.default_rng(0)
    cms = np.stack([simulate_structured_worker(rng, mats, wnids, groups, keep) for _ in range(W)])
    assert_close(cms.sum(2), np.ones((W, K)), 1e-6, "simulated confusion rows sum to 1")
    worker_acc = np.mean([np.diag(c).mean() for c in cms])
    assert 0.35 < worker_acc < 0.55, f"simulated Dog workers {worker_acc:.3f} accurate; the paper says ≈0.43"
    truth = rng.integers(0, K, T)
    task = np.repeat(np.arange(T), L)
    worker = np.argsort(rng.random((T, W)), axis=1)[:, :L].ravel()  # L distinct workers per task
    cum = np.cumsum(cms[worker, truth[task]], axis=1)
    label = np.minimum((rng.random(task.size)[:, None] > cum).sum(1), K - 1)  # z ~ Categorical(CM_w[y])
    pooled = sum(v.sum(0) for v in mats.values())[np.ix_(keep, keep)]
    bayes = BayesAggregator(global_cm=pooled).fit((task, worker, label), n_classes=K)
    mv = MajorityVote().fit((task, worker, label), n_classes=K)
    acc_b, acc_mv = (bayes.label_array_ == truth).mean(), (mv.label_array_ == truth).mean()
    assert acc_b > 0.5, f"BayesAggregator accuracy {acc_b:.4f} <= 0.5 on simulated Dog (MV {acc_mv:.4f})"
    assert acc_b >= acc_mv - TOL["vs_mv"], f"BayesAggregator {acc_b:.4f} is well below MajorityVote {acc_mv:.4f}"
    risk = bayes.risk_
    assert isinstance(risk, pd.Series) and list(risk.index) == list(range(T)), "risk_ must be indexed by task"
    assert np.array_equal(risk.to_numpy(), 1.0 - bayes.posteriors_.max(axis=1)), "risk_ != 1 - max posterior"
    assert ((risk >= 0) & (risk <= 1 - 1 / K + 1e-12)).all(), f"risk_ out of [0, 1 - 1/K]: {risk.min()}..{risk.max()}"
