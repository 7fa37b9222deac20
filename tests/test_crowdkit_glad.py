"""luab_fast.crowdkit.GLAD against crowd-kit 1.4.2's GLAD, which it reproduces step for step.

Both start on the same path: the engine's M-step is a port of the scipy CG that crowd-kit calls, with its
settings, so the first loss agrees to ~1e-12. Where the M-steps converge (the synthetic crowds here, and MS),
everything agrees to 1e-6. Where they stop after 25 CG iterations far from converged, rounding that differs
between pandas' sums and the engine's grows from one M-step to the next until a line-search decision flips and
the two paths part; from then on labels agree on >= 99% of tasks. There crowd-kit's last gains hover around tol
and its single test stops the climb at a random iteration, so the engine asks a second small gain in a row to
confirm a stop after a capped M-step (glad.cpp): its final Q is then no lower than crowd-kit's, checked here to
rounding (1e-9) on every crowd, rte and web included (before that rule ours stopped 3 iterations earlier on rte,
3.3e-5 lower). Edge cases (empty data, missing columns, one worker, one label, ties, n_iter=0, priors, string ids)
are checked against crowd-kit's own behaviour; then thread-count independence, the progress bar, and the argument
checks.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, load_crowd
from fixtures.aggregate import assert_close, assert_frames_close, assert_labels_equal

from luab_fast import _ext
from luab_fast.aggregate import make_crowd
from luab_fast.crowdkit import GLAD

pytest.importorskip("crowdkit")
from crowdkit.aggregation import GLAD as CkGLAD  # noqa: E402

# crowd-kit 1.4.2 uses pandas keywords that pandas 3 deprecates, and takes log(0) with a single label
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:crowdkit"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning:crowdkit")]

TOL = {
    "first_loss": 1e-9,      # Q after the first M-step: same start, same optimiser
    "converged": 1e-6,       # probas, alphas, betas, losses where the M-steps converge
    "loss": 1e-9,            # loss history where the M-steps converge
    "edge": 1e-9,            # the tiny edge-case crowds
    "label_agreement": 0.99,
    "final_q": 1e-9,         # "no worse than crowd-kit's": rounding only (equal fits differ by ~1e-10)
}

# name -> make_crowd(n_tasks, n_workers, labels_per_task, n_classes, seed)
SYNTHETIC = {"synthetic-K2": (300, 30, 3, 2, 11), "synthetic-K5": (300, 30, 3, 5, 13),
             "synthetic-K10": (200, 20, 4, 10, 16)}
CONVERGED = ("MS", *SYNTHETIC)  # crowd-kit's M-steps converge: it stops after 2 EM iterations
# crowd-kit needs 2-20 s per crowd here (web the most); rte and web are where its M-steps stop far from converged
SOURCES = ("bluebird", "MS", pytest.param("dog", marks=pytest.mark.slow), pytest.param("rte", marks=pytest.mark.slow),
           pytest.param("web", marks=pytest.mark.slow), *SYNTHETIC)


@functools.lru_cache(maxsize=None)
def crowd(source: str) -> pd.DataFrame:
    if source in SYNTHETIC:
        return make_crowd(*SYNTHETIC[source][:4], seed=SYNTHETIC[source][4]).frame()
    if not (SHARED_DATA / "crowd" / source).is_dir():
        pytest.skip(f"shared crowd data not found at {SHARED_DATA / 'crowd' / source}")
    return load_crowd(source)[0]


@functools.lru_cache(maxsize=None)
def fitted(source: str) -> tuple[CkGLAD, GLAD]:
    """(crowd-kit's, ours) fitted on the same crowd; crowd-kit is slow, so each pair fits once."""
    df = crowd(source)
    return CkGLAD().fit(df), GLAD().fit(df)


def test_exported_next_to_crowdkits_name():
    import luab_fast.crowdkit as ours

    assert "GLAD" in ours.__all__ and ours.GLAD is GLAD


# -- results --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", SOURCES)
def test_labels_and_final_q_match_crowdkit(source):
    ck, ours = fitted(source)
    same = float((ours.labels_.reindex(ck.labels_.index) == ck.labels_).mean())
    assert same >= TOL["label_agreement"], f"{source}: only {same:.4f} of labels equal crowd-kit's"
    assert_close(ours.loss_history_[0], ck.loss_history_[0], TOL["first_loss"], f"{source} first loss")
    q, q_ck = ours.loss_history_[-1], ck.loss_history_[-1]
    assert q >= q_ck - TOL["final_q"], f"{source}: final Q {q:.10f} below crowd-kit's {q_ck:.10f}"


@pytest.mark.parametrize("source", CONVERGED)
def test_converged_fits_equal_crowdkits(source):
    ck, ours = fitted(source)
    assert len(ours.loss_history_) == len(ck.loss_history_), (
        f"{source}: {len(ours.loss_history_)} EM iterations, crowd-kit ran {len(ck.loss_history_)}")
    assert_close(ours.loss_history_, ck.loss_history_, TOL["loss"], f"{source} loss_history_")
    assert_frames_close(ours.probas_, ck.probas_, TOL["converged"], f"{source} probas_")
    assert_labels_equal(ours.labels_, ck.labels_, f"{source} labels_")
    for name in ("alphas_", "betas_"):
        ref = getattr(ck, name)
        assert_close(getattr(ours, name).reindex(ref.index), ref, TOL["converged"], f"{source} {name}",
                     index=ref.index)


def _assert_same_series_layout(ours: pd.Series, ref: pd.Series, what: str) -> None:
    assert ours.name == ref.name, f"{what}: name {ours.name!r}, crowd-kit {ref.name!r}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype}, crowd-kit {ref.dtype}"
    assert ours.index.name == ref.index.name, f"{what}: index name {ours.index.name!r}, crowd-kit {ref.index.name!r}"
    assert ours.index.dtype == ref.index.dtype, f"{what}: index dtype {ours.index.dtype}, crowd-kit {ref.index.dtype}"
    assert ours.index.equals(ref.index), f"{what}: index order differs from crowd-kit's"


@pytest.mark.parametrize("source", ["bluebird", "synthetic-K5"])
def test_fitted_attributes_laid_out_as_crowdkits(source):
    ck, ours = fitted(source)
    for name in ("labels_", "alphas_", "betas_", "priors_"):
        _assert_same_series_layout(getattr(ours, name), getattr(ck, name), f"{source} {name}")
    assert ours.probas_.index.equals(ck.probas_.index) and ours.probas_.index.name == ck.probas_.index.name
    assert ours.probas_.columns.equals(ck.probas_.columns), (
        f"{source} probas_ columns {ours.probas_.columns} vs crowd-kit {ck.probas_.columns}")
    assert list(ours.probas_.dtypes.unique()) == list(ck.probas_.dtypes.unique())
    assert_close(ours.priors_, ck.priors_, 0.0, f"{source} priors_")
    assert type(ours.loss_history_) is list and all(type(q) is float for q in ours.loss_history_)
    for name in ("tasks_", "workers_", "prior_labels_"):
        assert np.array_equal(np.asarray(getattr(ours, name)), np.asarray(getattr(ck, name))), name
    for name in ("alphas_priors_mean_", "betas_priors_mean_"):
        assert getattr(ours, name).equals(getattr(ck, name)), name


def test_fit_predict_and_fit_predict_proba_return_the_fitted_attributes():
    df = crowd("synthetic-K2")
    g = GLAD()
    assert g.fit_predict(df) is g.labels_
    assert g.fit_predict_proba(df) is g.probas_
    assert GLAD().fit(df) is not None and repr(GLAD()).startswith("GLAD(n_iter=100, tol=1e-05, silent=True")


# -- edge cases, as crowd-kit behaves -------------------------------------------------------------------------
def _frame(task, worker, label):
    return pd.DataFrame({"task": task, "worker": worker, "label": label})


EDGE = {
    "single worker": (_frame([1, 2, 3], [7, 7, 7], [0, 1, 0]), {}),
    "single label": (_frame([1, 2, 3], [7, 8, 7], [0, 0, 0]), {}),
    "tie": (_frame([1, 1], [7, 8], ["b", "a"]), {}),
    "one row": (_frame(["t"], ["w"], ["x"]), {}),
    "string ids": (_frame(["a", "a", "b", "c"], ["x", "y", "x", "y"], ["p", "q", "q", "p"]), {}),
    "repeated labels": (_frame([1, 1, 1, 2], [7, 7, 8, 7], [0, 0, 1, 1]), {}),
    "extra column": (_frame([1, 1, 2], [7, 8, 7], [0, 1, 1]).assign(foo=[1, 2, 3]), {}),
    "n_iter=0": (_frame([1, 1, 2], [7, 8, 7], [0, 1, 1]), {"n_iter": 0}),
    "labels_priors": (_frame([1, 1, 2], [7, 8, 7], [0, 1, 1]), {"labels_priors": pd.Series([0.3, 0.7], [1, 0])}),
    "labels_priors, extra class": (_frame([1, 1, 2], [7, 8, 7], [0, 1, 1]),
                                   {"labels_priors": pd.Series([0.3, 0.5, 0.2], [1, 0, 2])}),
    "labels_priors, missing class": (_frame([1, 1, 2, 2], [7, 8, 7, 8], [0, 1, 1, 2]),
                                     {"labels_priors": pd.Series([0.4, 0.6], [1, 0])}),
    "prior means": (_frame([1, 1, 2, 2], [7, 8, 7, 8], [0, 1, 1, 0]),
                    {"alphas_priors_mean": pd.Series([0.5, 2.0], [8, 7]),
                     "betas_priors_mean": pd.Series([0.0, 1.5], [1, 2])}),
}


@pytest.mark.parametrize("case", EDGE)
def test_edge_case_as_crowdkit(case):
    df, kwargs = EDGE[case]
    ck, ours = CkGLAD(**kwargs).fit(df), GLAD(**kwargs).fit(df)
    assert_frames_close(ours.probas_, ck.probas_, TOL["edge"], f"{case}: probas_")
    assert ours.probas_.columns.equals(ck.probas_.columns), f"{case}: columns {ours.probas_.columns}"
    assert_labels_equal(ours.labels_, ck.labels_, f"{case}: labels_")
    assert len(ours.loss_history_) == len(ck.loss_history_), f"{case}: {ours.loss_history_} vs {ck.loss_history_}"
    assert_close(ours.loss_history_, ck.loss_history_, TOL["edge"], f"{case}: loss_history_")
    for name in ("alphas_", "betas_"):
        _assert_same_series_layout(getattr(ours, name), getattr(ck, name), f"{case}: {name}")
        assert_close(getattr(ours, name), getattr(ck, name), TOL["edge"], f"{case}: {name}")


@pytest.mark.parametrize("case", ["empty", "no label", "no worker", "no task"])
def test_bad_frames_raise_what_crowdkit_raises(case):
    full = _frame([1, 2], [7, 7], [0, 1])
    df = {"empty": full.iloc[:0], "no label": full.drop(columns="label"), "no worker": full.drop(columns="worker"),
          "no task": full.drop(columns="task")}[case]
    with pytest.raises(Exception) as theirs:
        CkGLAD().fit(df)
    with pytest.raises(type(theirs.value)) as ours:  # so code catching crowd-kit's exception catches ours
        GLAD().fit(df)
    assert isinstance(ours.value, ValueError), f"{case}: {ours.value!r} is not a ValueError"
    assert "GLAD.fit" in str(ours.value)


# -- engine -----------------------------------------------------------------------------------------------------
def test_results_do_not_depend_on_thread_count():
    df = make_crowd(3000, 60, 4, 3, seed=5).frame()  # 12 task chunks, so both threads get work
    one, two = GLAD(n_threads=1).fit(df), GLAD(n_threads=2).fit(df)
    assert one.loss_history_ == two.loss_history_
    for name in ("probas_", "alphas_", "betas_"):
        assert np.array_equal(getattr(one, name).to_numpy(), getattr(two, name).to_numpy()), name


def test_progress_bar_unless_silent(capsys):
    df = crowd("synthetic-K2")
    GLAD().fit(df)
    assert capsys.readouterr().err == ""
    GLAD(silent=False).fit(df)
    err = capsys.readouterr().err
    assert "Q = " in err, f"no progress bar on stderr: {err!r}"


@pytest.mark.parametrize("kwargs, data, match", [
    ({}, _frame([1, None], [7, 8], [0, 1]), "column 'task' has missing values"),
    ({}, _frame([1, 2], [7, 8], [0, np.nan]), "column 'label' has missing values"),
    ({"alphas_priors_mean": pd.Series([1.0], [7])}, _frame([1, 2], [7, 8], [0, 1]), "every worker"),
    ({"betas_priors_mean": "high"}, _frame([1, 2], [7, 8], [0, 1]), "betas_priors_mean must be"),
    ({"labels_priors": pd.Series([-0.5, 1.5], [0, 1])}, _frame([1, 2], [7, 8], [0, 1]), "labels_priors"),
    ({"tol": float("nan")}, _frame([1, 2], [7, 8], [0, 1]), "tol must be a number"),
    ({"n_threads": 0}, _frame([1, 2], [7, 8], [0, 1]), "n_threads"),
])
def test_rejects_what_crowdkit_would_turn_into_nan(kwargs, data, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GLAD(**kwargs).fit(data)


def test_rejects_a_non_frame():
    with pytest.raises(TypeError, match="pandas DataFrame"):
        GLAD().fit([(1, 7, 0)])


def _binding_args(**change):
    args = dict(task=np.array([0, 1, 1], np.int64), worker=np.array([0, 0, 1], np.int64),
                label=np.array([0, 1, 2], np.int64), n_tasks=2, n_workers=2, n_classes=2,
                label_prior=np.array([0.5, 0.5]), alpha_mean=np.ones(2), beta_mean=np.ones(2))
    args.update(change)
    return args


@pytest.mark.parametrize("change, match", [
    ({"task": np.array([0, 1, 1], np.int32)}, "task must be a int64 array"),
    ({"worker": np.array([0, 0], np.int64)}, r"worker must have shape \(3,\)"),
    ({"label": np.array([0, 1, 3], np.int64)}, "labels must be in"),
    ({"task": np.array([0, 1, 2], np.int64)}, "task ids must be in"),
    ({"label_prior": np.array([0.5, np.nan])}, "label_prior must hold finite values >= 0"),
    ({"alpha_mean": np.ones(3)}, r"alpha_mean must have shape \(2,\)"),
    ({"beta_init": np.array([1.0, np.inf])}, "beta_init must hold finite values"),
    ({"n_classes": 0}, "n_classes must be >= 1"),
    ({"n_iter": -1}, "n_iter must be >= 0"),
    ({"m_step_tol": float("nan")}, "m_step_tol must be a number"),
    ({"progress": 3}, "progress must be None or callable"),
    ({"n_threads": 5000}, "n_threads"),
])
def test_binding_names_the_bad_argument(change, match):
    with pytest.raises(ValueError, match=match):
        _ext.require_ext("test").aggregate.glad(**_binding_args(**change))


def test_binding_calls_progress_once_per_iteration():
    seen = []
    out = _ext.require_ext("test").aggregate.glad(**_binding_args(progress=lambda it, q: seen.append((it, q))))
    assert [it for it, _ in seen] == list(range(out["n_iter"]))
    assert all(np.isfinite(q) for _, q in seen)
