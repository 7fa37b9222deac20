"""luab_fast.crowdkit.KOS and MMSR against crowd-kit 1.4.2 (same inputs, same outputs, same edge cases).

Both draw crowd-kit's random starts with crowd-kit's own numpy calls, so the results are not "close": KOS's final
per-task sums (read from the Series crowd-kit hands to np.sign) and MMSR's skills, vote shares and labels come out
bit for bit, on the binary real crowds (KOS, MMSR) and the multi-class ones (MMSR), on synthetic crowds, and with
the rows sorted by task, by worker or shuffled (pandas sums a group pairwise or by Kahan depending on that order,
and the engines follow it). crowd-kit is slow (MMSR on rte takes seconds), so each of its fits runs once per
module (lru_cache).
"""

from __future__ import annotations

import functools
import inspect
import types
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, load_crowd

crowdkit = pytest.importorskip("crowdkit")
from crowdkit.aggregation import KOS as CkKOS  # noqa: E402
from crowdkit.aggregation import MMSR as CkMMSR  # noqa: E402

from luab_fast._ext import _C  # noqa: E402
from luab_fast.aggregate import make_crowd  # noqa: E402
from luab_fast.crowdkit import KOS, MMSR  # noqa: E402

# crowd-kit 1.4.2 uses pandas keywords that pandas 3 deprecates, and its MMSR takes logs of degenerate skills
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:crowdkit"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning:crowdkit")]

# Tolerances per quantity. 0.0: bit for bit (same operations in the same order as crowd-kit's numpy / pandas).
TOL = {
    "kos_score": 0.0,     # final per-task sums
    "skills": 0.0,        # MMSR skills_
    "scores": 0.0,        # MMSR scores_ (weighted vote shares)
    "loss_rel": 1e-12,    # MMSR loss_history_: numpy's norm sums through BLAS, ours in row order
}

# name -> make_crowd(n_tasks, n_workers, labels_per_task, n_classes, seed), row order
SYNTHETIC = {
    "syn-K2-by-task": ((300, 30, 3, 2, 21), "task"),
    "syn-K2-by-worker": ((300, 30, 3, 2, 21), "worker"),
    "syn-K2-shuffled": ((300, 30, 3, 2, 21), "shuffled"),
    "syn-K5-by-worker": ((300, 30, 4, 5, 22), "worker"),
    "syn-K5-shuffled": ((300, 30, 4, 5, 22), "shuffled"),
}
KOS_SOURCES = ("bluebird", "rte", "bluebird-shuffled", "syn-K2-by-task", "syn-K2-by-worker", "syn-K2-shuffled")
MMSR_SOURCES = ("bluebird", "rte", "dog", "MS", "syn-K2-shuffled", "syn-K5-by-worker", "syn-K5-shuffled",
                "sparse-partners")


def _sparse_partners() -> pd.DataFrame:
    """A crowd in which one worker shares tasks with a single other worker: crowd-kit's trimming count
    floor(1 / 2) − 1 is −1 there, which its slicing turns into "keep the largest value"."""
    df = make_crowd(60, 8, 3, 3, seed=5).frame()
    lone = pd.DataFrame({"task": [1000, 1001, 1000, 1001], "worker": [99, 99, 0, 0], "label": [0, 1, 0, 2]})
    return pd.concat([df, lone], ignore_index=True)


@functools.lru_cache(maxsize=None)
def crowd(source: str) -> pd.DataFrame:
    """The labels of a real or synthetic crowd (task, worker, label); cached, read-only."""
    if source == "sparse-partners":
        return _sparse_partners()
    if source in SYNTHETIC:
        (args, order) = SYNTHETIC[source]
        df = make_crowd(*args[:4], seed=args[4]).frame()
    else:
        name = source.removesuffix("-shuffled")
        if not (SHARED_DATA / "crowd" / name).is_dir():
            pytest.skip(f"shared crowd data not found at {SHARED_DATA / 'crowd' / name}")
        df, _ = load_crowd(name)
        order = "shuffled" if source.endswith("-shuffled") else "as-is"
    if order == "worker":
        df = df.sort_values("worker", kind="stable")
    elif order == "shuffled":
        df = df.sample(frac=1.0, random_state=7)
    return df.reset_index(drop=True)


def assert_same(ours: Any, ref: Any, atol: float, what: str) -> None:
    """|ours − ref| <= atol elementwise (NaN only where the other is NaN), with the count, the max error and the
    first mismatching positions."""
    a, e = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != crowd-kit's {e.shape}"
    both_nan = np.isnan(a) & np.isnan(e)
    bad = ~((np.abs(a - e) <= atol) | both_nan)
    if bad.any():
        err = np.abs(a - e)[bad]
        raise AssertionError(f"{what}: {int(bad.sum())} of {a.size} values differ by more than {atol:g} "
                             f"(max {np.nanmax(err):.3g}); first at {np.argwhere(bad)[:5].tolist()}")


def assert_series_like(ours: pd.Series, ref: pd.Series, what: str) -> None:
    """Same name, index (values, dtype, name), dtype and values."""
    assert ours.name == ref.name, f"{what}: name {ours.name!r} != crowd-kit's {ref.name!r}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != crowd-kit's {ref.dtype}"
    assert ours.index.name == ref.index.name and ours.index.dtype == ref.index.dtype, \
        f"{what}: index {ours.index.name!r}/{ours.index.dtype} != {ref.index.name!r}/{ref.index.dtype}"
    assert ours.index.equals(ref.index), f"{what}: index order differs: {ours.index[:5]} vs {ref.index[:5]}"
    differ = ours.to_numpy() != ref.to_numpy()
    assert not differ.any(), f"{what}: {int(differ.sum())} of {len(ref)} differ, first at {ref.index[differ][:5]}"


# -- KOS ---------------------------------------------------------------------------------------------------------
class _SignRecorder(types.ModuleType):
    """Stands in for numpy inside crowd-kit's kos.py and keeps what it passes to np.sign: its final sums."""

    def __init__(self) -> None:
        super().__init__("numpy")
        self.sums: list[pd.Series] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def sign(self, x: Any) -> Any:
        self.sums.append(x.copy())
        return np.sign(x)


@functools.lru_cache(maxsize=None)
def ck_kos(source: str, random_state: int, n_iter: int = 100) -> tuple[pd.Series, pd.Series]:
    """crowd-kit's (labels_, final per-task sums) on a crowd; cached."""
    import crowdkit.aggregation.classification.kos as module

    recorder = _SignRecorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "np", recorder)
        labels = CkKOS(n_iter=n_iter, random_state=random_state).fit(crowd(source)).labels_
    return labels, recorder.sums[-1]


@pytest.mark.parametrize("source", KOS_SOURCES)
@pytest.mark.parametrize("random_state", [0, 3])
def test_kos_matches_crowdkit_bit_for_bit(source, random_state):
    ref_labels, ref_sums = ck_kos(source, random_state)
    ours = KOS(random_state=random_state).fit(crowd(source))
    assert_series_like(ours.labels_, ref_labels, f"{source} KOS labels_")
    assert_same(ours._task_score, ref_sums.to_numpy(), TOL["kos_score"], f"{source} KOS final sums")


@pytest.mark.parametrize("n_iter", [0, 1, 7])
def test_kos_short_runs_match_crowdkit(n_iter):
    ref_labels, ref_sums = ck_kos("bluebird", 0, n_iter)
    ours = KOS(n_iter=n_iter).fit(crowd("bluebird"))
    assert_series_like(ours.labels_, ref_labels, f"KOS(n_iter={n_iter}) labels_")
    assert_same(ours._task_score, ref_sums.to_numpy(), TOL["kos_score"], f"KOS(n_iter={n_iter}) sums")


def test_kos_moves_numpy_global_state_like_crowdkit():
    df = crowd("syn-K2-by-task")
    CkKOS(random_state=11).fit(df)
    after_ck = np.random.random(3)
    KOS(random_state=11).fit(df)
    assert np.array_equal(np.random.random(3), after_ck)
    KOS(random_state=None).fit(df)  # np.random.seed(None): fresh entropy, still a valid fit


def test_kos_results_do_not_depend_on_threads():
    df = crowd("rte")
    runs = [KOS(n_threads=n).fit(df) for n in (1, 2, 3)]
    for run in runs[1:]:
        assert np.array_equal(run._task_score, runs[0]._task_score)
        assert run.labels_.equals(runs[0].labels_)


@pytest.mark.parametrize("labels, dtype", [(["no", "yes", "no", "no", "yes"], None),
                                           ([True, False, True, True, False], None),
                                           ([1, 0, 1, 1, 0], np.int32), ([1.5, 2.5, 1.5, 1.5, 2.5], None)])
def test_kos_label_dtypes_like_crowdkit(labels, dtype):
    df = pd.DataFrame({"task": ["a", "b", "a", "b", "c"], "worker": ["x", "x", "y", "y", "y"],
                       "label": np.array(labels, dtype=dtype) if dtype else labels})
    assert_series_like(KOS().fit_predict(df), CkKOS().fit_predict(df), f"labels {labels}")


def _raises(exc_type: type[BaseException], fn: Any) -> BaseException:
    with pytest.raises(exc_type) as info:
        fn()
    return info.value


@pytest.mark.parametrize("case, expected", [
    ("empty", None),
    ("no label column", AttributeError),
    ("no task column", KeyError),
    ("no worker column", KeyError),
    ("three labels", ValueError),
    ("one label", ValueError),
    ("single worker", KeyError),  # every task sums to exactly 0: np.sign gives 0, which maps to no label
])
def test_kos_edge_cases_like_crowdkit(case, expected):
    df = {
        "empty": pd.DataFrame(columns=["task", "worker", "label"]),
        "no label column": pd.DataFrame({"task": [1, 2], "worker": [1, 1]}),
        "no task column": pd.DataFrame({"worker": [1, 2], "label": [0, 1]}),
        "no worker column": pd.DataFrame({"task": [1, 2], "label": [0, 1]}),
        "three labels": pd.DataFrame({"task": [1, 2, 3], "worker": [1, 2, 1], "label": [0, 1, 2]}),
        "one label": pd.DataFrame({"task": [1, 2, 3], "worker": [1, 2, 1], "label": [0, 0, 0]}),
        "single worker": pd.DataFrame({"task": [1, 2, 3], "worker": [1, 1, 1], "label": [0, 1, 0]}),
    }[case]
    if expected is None:
        ref, ours = CkKOS().fit(df).labels_, KOS().fit(df).labels_
        assert len(ours) == 0 and ours.dtype == ref.dtype and ours.name == ref.name
        assert type(ours.index) is type(ref.index)
        return
    _raises(expected, lambda: CkKOS().fit(df))
    err = _raises(expected, lambda: KOS().fit(df))
    assert isinstance(err, ValueError), f"{case}: ours should also be a ValueError, got {type(err).__mro__}"


def test_kos_and_mmsr_signatures_match_crowdkit():
    for ours, ref in ((KOS, CkKOS), (MMSR, CkMMSR)):
        mine = [p for p in inspect.signature(ours).parameters.values() if p.kind is not p.KEYWORD_ONLY]
        theirs = list(inspect.signature(ref).parameters.values())
        assert [p.name for p in mine] == [p.name for p in theirs]
        for p, q in zip(mine, theirs):
            if isinstance(q.default, (int, float)) or q.default is None:
                assert p.default == q.default, f"{ours.__name__}({p.name}=...) default differs"
        for method in ("fit", "fit_predict", "predict", "predict_score", "fit_predict_score"):
            if hasattr(ref, method):
                assert list(inspect.signature(getattr(ours, method)).parameters) == \
                    list(inspect.signature(getattr(ref, method)).parameters)


# -- MMSR --------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def ck_mmsr(source: str) -> CkMMSR:
    """crowd-kit's MMSR fitted and applied on a crowd (skills_, labels_, scores_, loss_history_); cached."""
    df = crowd(source)
    model = CkMMSR().fit(df)
    model.predict_score(df)
    return model


@pytest.mark.parametrize("source", MMSR_SOURCES)
def test_mmsr_matches_crowdkit_bit_for_bit(source):
    df, ref = crowd(source), ck_mmsr(source)
    ours = MMSR()
    scores = ours.fit_predict_score(df)
    assert_series_like(ours.skills_, ref.skills_, f"{source} MMSR skills_")
    assert_same(ours.skills_, ref.skills_, TOL["skills"], f"{source} MMSR skills_")
    assert_series_like(ours.labels_, ref.labels_, f"{source} MMSR labels_")
    assert scores.index.equals(ref.scores_.index) and scores.columns.equals(ref.scores_.columns)
    assert scores.index.name == "task" and scores.columns.name == "label"
    assert_same(scores.to_numpy(), ref.scores_.to_numpy(), TOL["scores"], f"{source} MMSR scores_")
    assert len(ours.loss_history_) == len(ref.loss_history_), f"{source}: iteration count differs"
    ratio = np.asarray(ours.loss_history_) / np.asarray(ref.loss_history_)
    assert_same(ratio, np.ones_like(ratio), TOL["loss_rel"], f"{source} MMSR loss_history_ (relative)")
    assert ours._sparsity == ref._sparsity and ours._n_tasks == ref._n_tasks and ours._n_labels == ref._n_labels


def test_mmsr_private_fields_like_crowdkit():
    df, ref = crowd("sparse-partners"), ck_mmsr("sparse-partners")
    ours = MMSR().fit(df)
    for name in ("_observation_matrix", "_covariation_matrix", "_n_common_tasks"):
        assert np.array_equal(getattr(ours, name), getattr(ref, name)), name
    for name in ("_labels_mapping", "_workers_mapping", "_tasks_mapping", "_n_workers"):
        assert getattr(ours, name) == getattr(ref, name), name
    given = MMSR(n_workers=3, labels_mapping={"a": 1})
    assert given._n_workers == 3 and given._labels_mapping == {"a": 1} and given._covariation_matrix.size == 0


def test_mmsr_repeated_answers_keep_the_last_like_crowdkit():
    df = pd.concat([crowd("syn-K5-shuffled"), crowd("syn-K5-shuffled").iloc[:40].assign(label=1)],
                   ignore_index=True)
    ref, ours = CkMMSR().fit(df), MMSR().fit(df)
    assert_same(ours.skills_, ref.skills_, TOL["skills"], "MMSR skills_ with repeated answers")
    for name in ("_observation_matrix", "_covariation_matrix", "_n_common_tasks"):
        assert np.array_equal(getattr(ours, name), getattr(ref, name)), f"{name} with repeated answers"


def test_mmsr_predict_on_new_data_like_crowdkit():
    df, ref = crowd("dog"), ck_mmsr("dog")
    ours = MMSR().fit(df)
    part = df.iloc[::3]
    assert_series_like(ours.predict(part), CkMMSR.predict(ref, part), "MMSR.predict on a third of the answers")
    unseen = pd.DataFrame({"task": [1, 2], "worker": [-5, df.worker.iloc[0]], "label": [0, 1]})
    _raises(ValueError, lambda: CkMMSR.predict(ref, unseen))
    assert "Skill value is missing in 1 assignments" in str(_raises(ValueError, lambda: ours.predict(unseen)))


def test_mmsr_random_state_like_crowdkit():
    df = crowd("syn-K5-shuffled")
    np.random.seed(5)
    ref = CkMMSR(random_state=None).fit(df)
    after_ck = np.random.random(2)
    np.random.seed(5)
    ours = MMSR(random_state=None).fit(df)  # scipy draws u, then v, from numpy's global state
    assert np.array_equal(np.random.random(2), after_ck)
    assert_same(ours.skills_, ref.skills_, TOL["skills"], "MMSR(random_state=None) skills_")
    gen_ref = CkMMSR(random_state=np.random.default_rng(3)).fit(df)
    gen_ours = MMSR(random_state=np.random.default_rng(3)).fit(df)
    assert_same(gen_ours.skills_, gen_ref.skills_, TOL["skills"], "MMSR(random_state=Generator) skills_")


def test_mmsr_results_do_not_depend_on_threads():
    df = crowd("rte")
    runs = [MMSR(n_threads=n).fit(df) for n in (1, 2, 3)]
    for run in runs[1:]:
        assert run.skills_.equals(runs[0].skills_) and run.loss_history_ == runs[0].loss_history_
        assert run.predict_score(df).equals(runs[0].predict_score(df))


@pytest.mark.parametrize("case, expected", [
    ("empty", ValueError),
    ("no label column", KeyError),
    ("one label", ZeroDivisionError),
    ("two workers", ValueError),  # crowd-kit's sign step breaks (a shape mismatch) on a two-node graph
    ("single worker", None),
    ("three workers", None),
    ("string ids", ValueError),  # two workers again
])
def test_mmsr_edge_cases_like_crowdkit(case, expected):
    df = {
        "empty": pd.DataFrame(columns=["task", "worker", "label"]),
        "no label column": pd.DataFrame({"task": [1], "worker": [1]}),
        "one label": pd.DataFrame({"task": [1, 2, 3], "worker": [1, 2, 1], "label": [0, 0, 0]}),
        "two workers": pd.DataFrame({"task": [1, 2, 3, 1, 2], "worker": [1, 1, 1, 2, 2], "label": [0, 1, 0, 0, 1]}),
        "single worker": pd.DataFrame({"task": [1, 2, 3], "worker": [1, 1, 1], "label": [0, 1, 0]}),
        "three workers": pd.DataFrame({"task": [1, 2, 3, 1, 2, 1, 3], "worker": [1, 1, 1, 2, 2, 3, 3],
                                       "label": [0, 1, 0, 0, 1, 1, 1]}),
        "string ids": pd.DataFrame({"task": ["a", "b", "a", "b"], "worker": ["x", "x", "y", "y"],
                                    "label": ["no", "yes", "no", "no"]}),
    }[case]
    if expected is None:
        ref, ours = CkMMSR().fit(df), MMSR().fit(df)
        assert_series_like(ours.skills_, ref.skills_, f"{case} skills_")
        assert_series_like(ours.predict(df), CkMMSR.predict(ref, df), f"{case} labels_")
        return
    _raises(expected, lambda: CkMMSR().fit(df))
    _raises(expected, lambda: MMSR().fit(df))


def test_mmsr_predict_edge_cases_like_crowdkit():
    df = crowd("syn-K5-by-worker")
    _raises(AttributeError, lambda: CkMMSR().predict(df))
    _raises(AttributeError, lambda: MMSR().predict(df))
    ref, ours = CkMMSR().fit(df), MMSR().fit(df)
    empty = df.iloc[:0]
    ref_scores, our_scores = CkMMSR.predict_score(ref, empty), ours.predict_score(empty)
    assert our_scores.shape == ref_scores.shape == (0, 0)
    assert our_scores.index.name == "task" and our_scores.index.dtype == ref_scores.index.dtype
    assert len(ours.labels_) == 0 and ours.labels_.dtype == ref.labels_.dtype and ours.labels_.name == "agg_label"


# -- the compiled engines' argument checks -----------------------------------------------------------------------
def test_engines_refuse_bad_arguments_naming_them():
    i64 = np.array([0, 1, 1], np.int64)
    with pytest.raises(ValueError, match="task must be a int64 array"):
        _C.aggregate.kos(i64.astype(np.int32), i64, i64, 2, 2, np.ones(3), 5, 1e300, False, False, 0)
    with pytest.raises(ValueError, match="init_reliability must hold finite values"):
        _C.aggregate.kos(i64, i64, i64, 2, 2, np.array([1.0, np.nan, 1.0]), 5, 1e300, False, False, 0)
    with pytest.raises(ValueError, match="labels must be in"):
        _C.aggregate.kos(i64, i64, i64 + 1, 2, 2, np.ones(3), 5, 1e300, False, False, 0)
    with pytest.raises(ValueError, match="n_threads"):
        _C.aggregate.kos(i64, i64, i64, 2, 2, np.ones(3), 5, 1e300, False, False, -1)
    with pytest.raises(ValueError, match="u0 must have shape"):
        _C.aggregate.mmsr(i64, i64, i64, 2, 2, 2, np.ones(3), np.ones(2), 10, 1e-10, 0)
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        _C.aggregate.mmsr(i64, i64, i64 * 0, 2, 2, 1, np.ones(2), np.ones(2), 10, 1e-10, 0)
    with pytest.raises(ValueError, match="skills must hold finite values"):
        _C.aggregate.weighted_vote_shares(i64, i64, i64, 2, 2, 2, np.array([np.inf, 1.0]), False, 0)


def test_mmsr_sparse_crowd_gives_the_same_fit_every_time():
    """One answer per task leaves the sign step's eigenvalue tied: with ARPACK's own random start (what crowd-kit
    passes) the signs could change from fit to fit in one process; the fixed start makes every fit the same."""
    from luab_fast.aggregate import make_crowd

    for seed in range(3):
        df = make_crowd(300, 40, 1, 3, seed=seed).frame()
        first = MMSR().fit(df).skills_
        for _ in range(3):
            pd.testing.assert_series_equal(MMSR().fit(df).skills_, first, check_exact=True)
