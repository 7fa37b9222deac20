"""luab_fast.aggregate against crowd-kit 1.4.2, the library it promises to reproduce.

On the five real crowds of ../shared/data/crowd and on small synthetic crowds: MajorityVote (plain and
skill-weighted), DawidSkene(prior=0, prior_diag=0) and OneCoinDawidSkene() give crowd-kit's probabilities,
labels, EM iteration count, loss history, class priors and error tables. The default (smoothed)
DawidSkene must not lose accuracy against crowd-kit on real data and must survive the sparse K=100 trap
where unsmoothed DS collapses.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from conftest import CROWD_DATASETS, SHARED_DATA, load_crowd
from crowdkit.aggregation import DawidSkene as CkDawidSkene
from crowdkit.aggregation import MajorityVote as CkMajorityVote
from crowdkit.aggregation import OneCoinDawidSkene as CkOneCoin
from fixtures.aggregate import accuracy, assert_close, assert_frames_close, assert_labels_equal, top2_gap

from luab_fast.aggregate import DawidSkene, MajorityVote, OneCoinDawidSkene, make_crowd

# Tolerances, per quantity (fitted float64 EM in a different summation order than pandas).
TOL = {
    "probas": 1e-6,
    "priors": 1e-6,
    "errors": 1e-6,
    "loss": 1e-9,
    "skills": 1e-6,
    "tie_gap": 1e-9,          # MV labels are compared only where the top-2 probability gap exceeds this
    "accuracy_drop": 0.005,   # default DS may be at most 0.5 points below crowd-kit's DS
}

# name -> make_crowd(n_tasks, n_workers, labels_per_task, n_classes, seed)
SYNTHETIC = {"synthetic-K2": (300, 30, 3, 2, 11), "synthetic-K5": (300, 30, 3, 5, 12),
             "synthetic-K10": (300, 30, 3, 10, 13)}
SOURCES = (*CROWD_DATASETS, *SYNTHETIC)

# crowd-kit 1.4.2 uses pandas keywords that pandas 3 deprecates; those warnings are not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crowdkit")


@functools.lru_cache(maxsize=None)
def crowd(source: str) -> tuple[pd.DataFrame, pd.Series]:
    """(labels DataFrame task/worker/label, gold Series) of a real or synthetic crowd; cached, read-only."""
    if source in SYNTHETIC:
        c = make_crowd(*SYNTHETIC[source][:4], seed=SYNTHETIC[source][4])
        return c.frame(), pd.Series(c.truth, name="truth").rename_axis("task")
    if not (SHARED_DATA / "crowd" / source).is_dir():
        pytest.skip(f"shared crowd data not found at {SHARED_DATA / 'crowd' / source}")
    return load_crowd(source)


CK = {"ds": lambda: CkDawidSkene(n_iter=100, tol=1e-5), "onecoin": lambda: CkOneCoin(n_iter=100, tol=1e-5)}
OURS = {"ds": lambda: DawidSkene(prior=0.0, prior_diag=0.0), "onecoin": lambda: OneCoinDawidSkene()}


@functools.lru_cache(maxsize=None)
def fitted(source: str, method: str):
    """(crowd-kit model, our model) fitted on the same crowd; crowd-kit is slow, so each pair fits once."""
    df, _ = crowd(source)
    return CK[method]().fit(df), OURS[method]().fit(df)


# -- majority vote ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", SOURCES)
def test_majority_vote_matches_crowdkit(source):
    df, _ = crowd(source)
    ck, ours = CkMajorityVote().fit(df), MajorityVote().fit(df)
    assert_frames_close(ours.probas_, ck.probas_, TOL["probas"], f"{source} MV probas_")
    # exact ties: crowd-kit's idxmax follows its own (unsorted) column order, ours takes the smallest label
    clear = top2_gap(ck.probas_) > TOL["tie_gap"]
    assert clear.mean() > 0.5, f"{source}: fewer than half the tasks are tie-free; the label check would be empty"
    assert_labels_equal(ours.labels_, ck.labels_, f"{source} MV labels_ (tie-free tasks)", mask=clear)


@pytest.mark.parametrize("source", SOURCES)
def test_weighted_majority_vote_matches_crowdkit(source):
    df, _ = crowd(source)
    workers = pd.unique(df["worker"])
    skills = pd.Series(np.random.default_rng(5).uniform(0.05, 1.0, len(workers)), index=workers, name="skill")
    ck, ours = CkMajorityVote().fit(df, skills=skills), MajorityVote().fit(df, skills=skills)
    assert_frames_close(ours.probas_, ck.probas_, TOL["probas"], f"{source} weighted MV probas_")
    clear = top2_gap(ck.probas_) > TOL["tie_gap"]
    assert_labels_equal(ours.labels_, ck.labels_, f"{source} weighted MV labels_", mask=clear)


@pytest.mark.parametrize("source", ["dog", "synthetic-K5"])
def test_weighted_majority_vote_default_skill_matches_crowdkit(source):
    df, _ = crowd(source)
    workers = pd.unique(df["worker"])
    skills = pd.Series(np.linspace(0.2, 0.9, len(workers)), index=workers).iloc[::2]  # half the workers missing
    ck = CkMajorityVote(on_missing_skill="value", default_skill=0.37).fit(df, skills=skills)
    ours = MajorityVote(default_skill=0.37).fit(df, skills=skills)
    assert_frames_close(ours.probas_, ck.probas_, TOL["probas"], f"{source} MV probas_ with default_skill")


# -- Dawid-Skene and one-coin, unsmoothed: crowd-kit exactly --------------------------------------------
METHODS = ("ds", "onecoin")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("source", SOURCES)
def test_probas_and_labels_match_crowdkit(source, method):
    ck, ours = fitted(source, method)
    assert_frames_close(ours.probas_, ck.probas_, TOL["probas"], f"{source} {method} probas_")
    assert_labels_equal(ours.labels_, ck.labels_, f"{source} {method} labels_")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("source", SOURCES)
def test_em_iterations_and_loss_history_match_crowdkit(source, method):
    ck, ours = fitted(source, method)
    assert len(ours.loss_history_) == len(ck.loss_history_), (
        f"{source} {method}: {len(ours.loss_history_)} EM iterations, crowd-kit ran {len(ck.loss_history_)} "
        f"(ours ends {ours.loss_history_[-3:]}, crowd-kit {ck.loss_history_[-3:]})")
    assert ours.n_iter_ == len(ours.loss_history_), f"n_iter_={ours.n_iter_} != len(loss_history_)"
    assert_close(ours.loss_history_, ck.loss_history_, TOL["loss"], f"{source} {method} loss_history_")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("source", SOURCES)
def test_priors_match_crowdkit(source, method):
    ck, ours = fitted(source, method)
    ref = ck.priors_
    assert set(ours.priors_.index) == set(ref.index), (
        f"{source}: classes {list(ours.priors_.index)} vs {list(ref.index)}")
    assert_close(ours.priors_.reindex(ref.index), ref, TOL["priors"], f"{source} {method} priors_", index=ref.index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("source", SOURCES)
def test_errors_match_crowdkit_on_observed_pairs(source, method):
    ck, ours = fitted(source, method)
    df, _ = crowd(source)
    n_w, n_k = df["worker"].nunique(), df["label"].nunique()
    assert ours.errors_.shape == (n_w * n_k, n_k), (
        f"{source}: errors_ should have a row per (worker, label) pair, {n_w}×{n_k}, got {ours.errors_.shape}")
    ref = ck.errors_
    assert list(ours.errors_.index.names) == list(ref.index.names), (
        f"errors_ index names {ours.errors_.index.names} vs crowd-kit {ref.index.names}")
    assert_frames_close(ours.errors_, ref, TOL["errors"], f"{source} {method} errors_ on crowd-kit's rows")


@pytest.mark.parametrize("source", SOURCES)
def test_onecoin_skills_match_crowdkit(source):
    ck, ours = fitted(source, "onecoin")
    ref = ck.skills_
    assert_close(ours.skills_.reindex(ref.index), ref, TOL["skills"], f"{source} one-coin skills_", index=ref.index)


# -- the default prior: accuracy --------------------------------------------------------------------------
@pytest.mark.parametrize("name", CROWD_DATASETS)
def test_default_dawid_skene_accuracy_not_below_crowdkit(name):
    df, truth = crowd(name)
    ck, _ = fitted(name, "ds")
    ck_acc = accuracy(ck.labels_, truth)
    ours_acc = accuracy(DawidSkene().fit_predict(df), truth)
    assert ours_acc >= ck_acc - TOL["accuracy_drop"], (
        f"{name}: default DawidSkene accuracy {ours_acc:.4f} is more than {TOL['accuracy_drop']:.3f} below "
        f"crowd-kit's DS {ck_acc:.4f} on {truth.index.isin(df['task']).sum()} gold tasks")


@pytest.mark.slow
def test_default_prior_survives_sparse_k100_trap():
    """10k tasks × 1000 workers × 5 labels × 100 classes: ~50 labels per worker for 10^4 confusion cells.
    Unsmoothed DS (crowd-kit's) overfits and collapses (doc: 0.536); the default prior must not."""
    c = make_crowd(10_000, 1_000, 5, 100, seed=0)
    truth = pd.Series(c.truth)
    smoothed = accuracy(DawidSkene().fit_predict(c.arrays), truth)
    unsmoothed = accuracy(DawidSkene(prior=0.0, prior_diag=0.0).fit_predict(c.arrays), truth)
    mv = accuracy(MajorityVote().fit_predict(c.arrays), truth)
    assert smoothed >= 0.97, (
        f"default DawidSkene accuracy {smoothed:.4f} < 0.97 (MV {mv:.4f}, unsmoothed {unsmoothed:.4f})")
    assert unsmoothed < 0.7, (
        f"unsmoothed DawidSkene reached {unsmoothed:.4f}: the trap no longer springs, so this test no longer "
        f"shows what the prior is for (default {smoothed:.4f})")
