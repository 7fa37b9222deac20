"""luab_fast.crowdkit.MACE against crowd-kit 1.4.2's MACE, which it reproduces number for number.

The random starts are drawn with crowd-kit's own numpy calls and the C++ engine iterates from them, so on the real
crowds of ../shared/data/crowd and on small synthetic ones (string ids, shuffled rows) probabilities, labels,
``spamming_``, ``thetas_`` and the log marginal likelihood agree to rounding, for both methods. Also: crowd-kit's
``random_state`` semantics (int, None, RandomState, Generator), thread-count independence, the edge cases, the
fitted attributes' layout, and the engine's argument checks.

crowd-kit is slow (~1 s per restart on these crowds), so every pair of fits is cached, and crowd-kit runs with
``n_restarts=1``: with an int ``random_state`` its restarts all draw the same start (scipy seeds a fresh generator
per draw), so one restart gives what ten give; ``test_restarts_with_int_seed_are_alike`` checks that.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pandas as pd
import pytest
from conftest import CROWD_DATASETS, SHARED_DATA, load_crowd
from fixtures.aggregate import assert_close, assert_frames_close, assert_labels_equal

from luab_fast.aggregate import make_crowd
from luab_fast.crowdkit import MACE
from luab_fast.crowdkit.mace import EmptyCrowdError

crowdkit = pytest.importorskip("crowdkit")
from crowdkit.aggregation import MACE as CkMACE  # noqa: E402

# crowd-kit 1.4.2 uses pandas keywords that pandas 3 deprecates; those warnings are not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crowdkit")

# Tolerances, per quantity: the same float64 arithmetic in another order (one division instead of K per label,
# sums in CSR order), 50 iterations deep.
TOL = {
    "probas": 1e-9,
    "params": 1e-9,        # spamming_, thetas_
    "loglik_rel": 1e-11,   # relative to |log marginal likelihood|
}

# name -> (n_tasks, n_workers, labels_per_task, n_classes, seed); ids become strings and the rows are shuffled,
# so that order of appearance differs from sorted order (crowd-kit's M-step writes thetas_ in sorted order)
SYNTHETIC = {"synthetic-K3": (150, 15, 3, 3, 21), "synthetic-K7": (150, 15, 4, 7, 22)}
SOURCES = (*CROWD_DATASETS, *SYNTHETIC)
METHODS = ("vb", "em")


def synthetic(source: str) -> pd.DataFrame:
    n_tasks, n_workers, per_task, k, seed = SYNTHETIC[source]
    df = make_crowd(n_tasks, n_workers, per_task, k, seed=seed).frame()
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return pd.DataFrame({"task": "t" + df["task"].astype(str), "worker": "w" + df["worker"].astype(str),
                         "label": "c" + df["label"].astype(str)})


@functools.lru_cache(maxsize=None)
def crowd(source: str) -> pd.DataFrame:
    if source in SYNTHETIC:
        return synthetic(source)
    if not (SHARED_DATA / "crowd" / source).is_dir():
        pytest.skip(f"shared crowd data not found at {SHARED_DATA / 'crowd' / source}")
    return load_crowd(source)[0]


def crowdkit_log_likelihood(model: CkMACE, df: pd.DataFrame) -> float:
    """crowd-kit's log marginal likelihood under its fitted parameters (its own E-step; it keeps no attribute)."""
    workers, worker_names = pd.factorize(df["worker"])
    labels, label_names = pd.factorize(df["label"])
    tasks, task_names = pd.factorize(df["task"])
    return float(model._e_step(df.copy(deep=True), task_names, worker_names, label_names, tasks, workers,
                               labels)[0])


@functools.lru_cache(maxsize=None)
def fitted(source: str, method: str) -> tuple[CkMACE, MACE, float]:
    """(crowd-kit model, ours, crowd-kit's log marginal likelihood), each fitted once; ours with the defaults."""
    df = crowd(source)
    ck = CkMACE(n_restarts=1, method=method).fit(df)
    return ck, MACE(method=method).fit(df), crowdkit_log_likelihood(ck, df)


def assert_same_fit(ours: MACE, ck: CkMACE, what: str, ck_loglik: float | None = None) -> None:
    assert_frames_close(ours.probas_, ck.probas_, TOL["probas"], f"{what} probas_")
    assert_labels_equal(ours.labels_, ck.labels_, f"{what} labels_")
    assert_close(ours.spamming_, ck.spamming_, TOL["params"], f"{what} spamming_")
    assert_close(ours.thetas_, ck.thetas_, TOL["params"], f"{what} thetas_")
    if ck_loglik is not None:
        assert_close(ours.log_marginal_likelihood_, ck_loglik, TOL["loglik_rel"] * abs(ck_loglik),
                     f"{what} log marginal likelihood")


# -- results ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("source", SOURCES)
def test_matches_crowdkit(source, method):
    ck, ours, ck_loglik = fitted(source, method)
    assert_same_fit(ours, ck, f"{source} {method}", ck_loglik)


@pytest.mark.parametrize("source", ["bluebird", "synthetic-K3"])
def test_result_layout_matches_crowdkit(source):
    """Index, columns, names and dtypes, in crowd-kit's order (tasks and labels by first appearance)."""
    ck, ours, _ = fitted(source, "vb")
    pd.testing.assert_index_equal(ours.probas_.index, ck.probas_.index)
    pd.testing.assert_index_equal(ours.probas_.columns, ck.probas_.columns)
    pd.testing.assert_series_equal(ours.labels_, ck.labels_)
    assert ours.probas_.dtypes.eq(np.float64).all()
    for name in ("spamming_", "thetas_", "theta_priors_", "strategy_priors_"):
        a, b = getattr(ours, name), getattr(ck, name)
        assert (type(a), a.dtype, a.shape) == (type(b), b.dtype, b.shape), name
    np.testing.assert_array_equal(ours.theta_priors_, ck.theta_priors_)
    np.testing.assert_array_equal(ours.strategy_priors_, ck.strategy_priors_)
    assert ours.smoothing_ == ck.smoothing_


def test_em_sets_no_priors_as_crowdkit():
    ck, ours, _ = fitted("synthetic-K3", "em")
    for name in ("theta_priors_", "strategy_priors_"):
        assert hasattr(ours, name) == hasattr(ck, name) is False


def test_fit_predict_and_proba_return_the_fitted_attributes():
    df = crowd("synthetic-K3")
    m = MACE(n_iter=5)
    pd.testing.assert_series_equal(m.fit_predict(df), m.labels_)
    pd.testing.assert_frame_equal(m.fit_predict_proba(df), m.probas_)


def test_signature_and_defaults_are_crowdkits():
    ours = inspect.signature(MACE).parameters
    theirs = inspect.signature(CkMACE).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    assert all(ours[n].default == theirs[n].default for n in theirs)
    assert list(ours)[len(theirs):] == ["n_threads"] and ours["n_threads"].kind is inspect.Parameter.KEYWORD_ONLY


# -- restarts and random_state ------------------------------------------------------------------------------
def small() -> pd.DataFrame:
    return crowd("synthetic-K3").iloc[:240]


@functools.lru_cache(maxsize=None)
def ck_small(kind: str, seed: int) -> tuple[CkMACE, float]:
    np.random.seed(seed)  # for random_state=None: numpy's global generator
    ck = CkMACE(n_restarts=3, n_iter=20, random_state=random_state(kind, seed)).fit(small())
    return ck, crowdkit_log_likelihood(ck, small())


def random_state(kind: str, seed: int):
    return {"int": seed, "none": None, "RandomState": np.random.RandomState(seed),
            "Generator": np.random.default_rng(seed)}[kind]


@pytest.mark.parametrize("kind", ["int", "none", "RandomState", "Generator"])
def test_random_state_semantics_match_crowdkit(kind):
    ck, ck_loglik = ck_small(kind, 5)
    np.random.seed(5)
    ours = MACE(n_restarts=3, n_iter=20, random_state=random_state(kind, 5)).fit(small())
    assert_same_fit(ours, ck, f"random_state={kind}", ck_loglik)


def test_same_seed_same_result_other_seed_other_start():
    a = MACE(n_iter=3, random_state=1).fit(small())
    b = MACE(n_iter=3, random_state=1).fit(small())
    c = MACE(n_iter=3, random_state=2).fit(small())
    np.testing.assert_array_equal(a.thetas_, b.thetas_)
    pd.testing.assert_frame_equal(a.probas_, b.probas_)
    assert not np.array_equal(a.thetas_, c.thetas_)


def test_restarts_with_int_seed_are_alike():
    """crowd-kit's restarts with an int seed all start alike: 3 of them give what 1 gives (and ours, fitting equal
    starts once, what crowd-kit's 3 give)."""
    ck, _ = ck_small("int", 5)
    ck1 = CkMACE(n_restarts=1, n_iter=20, random_state=5).fit(small())
    np.testing.assert_array_equal(ck.thetas_, ck1.thetas_)


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_progress_gives_the_same_fit(verbose, capsys):
    quiet = MACE(n_restarts=2, n_iter=4, random_state=None)
    loud = MACE(n_restarts=2, n_iter=4, random_state=None, verbose=verbose)
    np.random.seed(3)
    quiet.fit(small())
    np.random.seed(3)
    loud.fit(small())
    np.testing.assert_array_equal(loud.thetas_, quiet.thetas_)
    np.testing.assert_array_equal(loud.probas_.to_numpy(), quiet.probas_.to_numpy())
    err = capsys.readouterr().err
    assert "Restarts" in err and ("Iterations" in err) == (verbose > 1)


# -- threads ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 11])  # a fixed-K E-step and the blocked one
@pytest.mark.parametrize("method", METHODS)
def test_results_do_not_depend_on_thread_count(k, method):
    df = make_crowd(3000, 60, 3, k, seed=k).frame()  # a dozen E-step chunks
    fits = [MACE(n_restarts=2, n_iter=10, method=method, random_state=None, n_threads=n) for n in (1, 2, 3)]
    for m in fits:
        np.random.seed(9)
        m.fit(df)
    for m in fits[1:]:
        np.testing.assert_array_equal(m.probas_.to_numpy(), fits[0].probas_.to_numpy())
        np.testing.assert_array_equal(m.thetas_, fits[0].thetas_)
        np.testing.assert_array_equal(m.spamming_, fits[0].spamming_)
        assert m.log_marginal_likelihood_ == fits[0].log_marginal_likelihood_


# -- edge cases ---------------------------------------------------------------------------------------------
def frame(tasks, workers, labels) -> pd.DataFrame:
    return pd.DataFrame({"task": tasks, "worker": workers, "label": labels})


EDGE = {
    "single worker": frame(["t1", "t2", "t3"], ["w"] * 3, ["b", "a", "b"]),
    "single label": frame(["t1"], ["w"], ["b"]),
    "tie": frame(["t1", "t1"], ["w1", "w2"], ["b", "a"]),
    "unsorted ids": frame(["t2", "t1", "t2", "t1", "t3"], ["z", "a", "a", "z", "m"], ["c", "a", "b", "c", "a"]),
    "repeated label": frame(["t1", "t1", "t2"], ["a", "a", "a"], ["c", "c", "b"]),
    "int ids, bool labels": frame([2, 1, 2], [0, 1, 1], [True, False, True]),
    "categorical": frame(pd.Categorical(["t2", "t1", "t2"]), ["z", "a", "a"],
                         pd.Categorical(["c", "a", "b"], categories=["c", "b", "a", "d"])),
}
EDGE_ARGS = {"vb": {}, "em": {"method": "em"}, "other method is em": {"method": "EM"}, "no iterations": {"n_iter": 0},
             "no noise": {"default_noise": -1.0}, "small priors": {"alpha": 0.05, "beta": 3.0}}


@pytest.mark.parametrize("args", list(EDGE_ARGS))
@pytest.mark.parametrize("case", list(EDGE))
def test_edge_cases_match_crowdkit(case, args):
    df = EDGE[case]
    kwargs = {"n_iter": 8, **EDGE_ARGS[args]}
    ck = CkMACE(n_restarts=1, **kwargs).fit(df)
    ours = MACE(**kwargs).fit(df)
    assert_same_fit(ours, ck, f"{case}, {args}", crowdkit_log_likelihood(ck, df))
    pd.testing.assert_index_equal(ours.probas_.columns, ck.probas_.columns)
    pd.testing.assert_series_equal(ours.labels_, ck.labels_)


def test_empty_input_raises_as_crowdkit():
    empty = frame([], [], [])
    with pytest.raises(ZeroDivisionError):
        CkMACE().fit(empty)
    with pytest.raises(ZeroDivisionError):
        MACE().fit(empty)
    with pytest.raises(EmptyCrowdError, match="no labels"):  # also a ValueError, with a message
        MACE().fit(empty)


@pytest.mark.parametrize("missing", ["task", "worker", "label"])
def test_missing_column_raises_keyerror_as_crowdkit(missing):
    df = EDGE["tie"].drop(columns=missing)
    with pytest.raises(KeyError) as theirs:
        CkMACE().fit(df)
    with pytest.raises(KeyError) as ours:
        MACE().fit(df)
    assert ours.value.args == theirs.value.args


def test_bad_default_noise_raises_valueerror_as_crowdkit():
    with pytest.raises(ValueError):
        CkMACE(default_noise=-2).fit(EDGE["tie"])
    with pytest.raises(ValueError, match="default_noise"):
        MACE(default_noise=-2).fit(EDGE["tie"])


@pytest.mark.parametrize("column", ["task", "worker", "label"])
def test_missing_values_are_refused(column):
    """Deliberately stricter than crowd-kit, which indexes NaN ids as the last worker / label / task."""
    df = EDGE["unsorted ids"].astype(object)
    df.loc[1, column] = np.nan
    with pytest.raises(ValueError, match=f"column '{column}' has missing values"):
        MACE().fit(df)


@pytest.mark.parametrize("bad, message", [({"n_restarts": 0}, "n_restarts"), ({"n_threads": 0}, "n_threads"),
                                          ({"alpha": float("nan")}, "alpha"), ({"random_state": "x"}, "random_state")])
def test_bad_arguments_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        MACE(**bad).fit(EDGE["tie"])


# -- the engine's checks ------------------------------------------------------------------------------------
def engine_args(**over):
    from luab_fast._ext import require_ext

    args = dict(task=np.array([0, 0, 1]), worker=np.array([0, 1, 1]), label=np.array([1, 0, 1]), n_tasks=2,
                n_workers=2, n_classes=2, spamming0=np.full((1, 2, 2), 0.5), thetas0=np.full((1, 2, 2), 0.5),
                theta_row=np.array([0, 1]), theta_col=np.array([0, 1]))
    args.update(over)
    return require_ext("mace").aggregate.mace, args


@pytest.mark.parametrize("over, message", [
    ({"theta_row": np.array([0, 0])}, "theta_row must be a permutation"),
    ({"theta_col": np.array([0, 2])}, "theta_col must be a permutation"),
    ({"spamming0": np.full((1, 3, 2), 0.5)}, "spamming0 must have shape"),
    ({"spamming0": np.full((2, 2), 0.5)}, "spamming0 must be"),
    ({"thetas0": np.full((1, 2, 2), np.nan)}, "thetas0 must hold finite"),
    ({"thetas0": np.full((1, 2, 2), 0.5, np.float32)}, "thetas0 must be a float64"),
    ({"label": np.array([1, 0, 2])}, "labels must be in"),
    ({"n_iter": -1}, "n_iter"),
    ({"alpha": float("inf")}, "alpha must be finite"),
    ({"n_threads": 5000}, "n_threads"),
])
def test_engine_refuses_bad_arguments(over, message):
    fn, args = engine_args(**over)
    with pytest.raises(ValueError, match=message):
        fn(**args)
