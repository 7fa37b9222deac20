"""luab_fast.crowdkit's closed-form classes against crowd-kit 1.4.2, on the real crowds of ../shared/data/crowd and
small synthetic ones: the same labels, probabilities within 1e-6, and every fitted attribute equal with its name,
dtype, index and column names (pandas' assert_*_equal); the same exceptions and empty results on edge cases; and
results that do not depend on the thread count.

crowd-kit 1.4.2's Wawa, ZeroBasedSkill and GoldMajorityVote fail at predict under scikit-learn >= 1.6 (their
check_is_fitted raises about __sklearn_tags__), so their reference here is crowd-kit's code as written: the few lines
of their fit/predict re-stated over crowd-kit's own MajorityVote and get_accuracy (``ck_wawa`` and co. below), and
``test_references_are_crowdkits_code`` shows those equal crowd-kit's classes once only check_is_fitted is replaced.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pandas as pd
import pytest

crowdkit = pytest.importorskip("crowdkit")

from conftest import CROWD_DATASETS, SHARED_DATA, load_crowd  # noqa: E402
from crowdkit.aggregation import DawidSkene as CkDawidSkene  # noqa: E402
from crowdkit.aggregation import MajorityVote as CkMajorityVote  # noqa: E402
from crowdkit.aggregation import OneCoinDawidSkene as CkOneCoin  # noqa: E402
from crowdkit.aggregation.utils import get_accuracy  # noqa: E402

from luab_fast import crowdkit as lf  # noqa: E402
from luab_fast.aggregate import make_crowd  # noqa: E402
from luab_fast.crowdkit._frame import NotFittedError  # noqa: E402

# crowd-kit 1.4.2 uses pandas keywords that pandas 3 deprecates; those warnings are not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crowdkit", "ignore::FutureWarning:crowdkit")

# Tolerances, per quantity (assert_*_equal: |ours - theirs| <= atol + rtol * |theirs|)
TOL = {
    "attrs": dict(rtol=1e-6),                # probas_, priors_, errors_, skills_ of the closed-form fits
    "initial_error": dict(rtol=1e-6, atol=1e-6),  # EM from given tables amplifies rounding (~1e-7 after 30 steps)
    "loss": 1e-9,                            # loss_history_, per EM iteration
}

# name -> make_crowd(n_tasks, n_workers, labels_per_task, n_classes, seed); rows shuffled (first appearance is
# not sorted order), and K10 with string ids and labels
SYNTHETIC = {"synthetic-K2": (300, 30, 3, 2, 11), "synthetic-K5": (300, 30, 3, 5, 12),
             "synthetic-K10": (200, 20, 4, 10, 13)}
SOURCES = (*CROWD_DATASETS, *SYNTHETIC)
SMALL = ("bluebird", "dog", "MS", "synthetic-K2", "synthetic-K5")  # where crowd-kit's EM takes ~1 s


@functools.lru_cache(maxsize=None)
def crowd(source: str) -> tuple[pd.DataFrame, pd.Series]:
    """(labels DataFrame task/worker/label, gold Series) of a real or synthetic crowd; cached, read-only."""
    if source in SYNTHETIC:
        c = make_crowd(*SYNTHETIC[source][:4], seed=SYNTHETIC[source][4])
        df = c.frame().sample(frac=1.0, random_state=SYNTHETIC[source][4]).reset_index(drop=True)
        truth = pd.Series(c.truth, name="truth").rename_axis("task")
        if source == "synthetic-K10":
            df = df.assign(task="t" + df["task"].astype(str), worker="w" + df["worker"].astype(str),
                           label="c" + df["label"].astype(str))
            truth = pd.Series("c" + truth.astype(str).to_numpy(), index="t" + truth.index.astype(str), name="truth")
        return df, truth
    if not (SHARED_DATA / "crowd" / source).is_dir():
        pytest.skip(f"shared crowd data not found at {SHARED_DATA / 'crowd' / source}")
    return load_crowd(source)


def assert_same(ours, theirs, what: str, tol: dict | None = None) -> None:
    """Equal values (floats within tol), names, dtypes, index and columns."""
    tol = TOL["attrs"] if tol is None else tol
    if isinstance(theirs, pd.DataFrame):
        pd.testing.assert_frame_equal(ours, theirs, obj=what, **tol)
    elif isinstance(theirs, pd.Series):
        pd.testing.assert_series_equal(ours, theirs, obj=what, **tol)
    elif tol.get("check_exact"):
        assert ours == theirs, what
    else:  # loss_history_: as many iterations, each within the loss tolerance (or the given atol)
        assert len(ours) == len(theirs), f"{what}: {len(ours)} values, crowd-kit has {len(theirs)}"
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=tol.get("atol", TOL["loss"]), err_msg=what)


def assert_fitted_equal(ours, theirs, attrs: tuple[str, ...], what: str, tol: dict | None = None) -> None:
    for attr in attrs:
        assert hasattr(ours, attr) == hasattr(theirs, attr), f"{what}: {attr} set by one side only"
        if hasattr(theirs, attr):
            assert_same(getattr(ours, attr), getattr(theirs, attr), f"{what} {attr}", tol)


# -- crowd-kit's code as written, where its classes fail under current scikit-learn ----------------------------
def ck_vote(df: pd.DataFrame, skills: pd.Series) -> CkMajorityVote:
    return CkMajorityVote().fit(df, skills)


def ck_wawa(df: pd.DataFrame) -> tuple[pd.Series, CkMajorityVote]:
    """crowd-kit 1.4.2, wawa.py: fit = accuracy against the plain vote; predict = the vote weighted by it."""
    df = df[["task", "worker", "label"]]
    skills = get_accuracy(df, CkMajorityVote().fit(df).labels_, by="worker").rename("skill")
    return skills, ck_vote(df, skills)


def ck_gold(df: pd.DataFrame, true_labels: pd.Series) -> tuple[pd.Series, CkMajorityVote]:
    """crowd-kit 1.4.2, gold_majority_vote.py: fit = accuracy on gold; predict = the vote weighted by it."""
    df = df[["task", "worker", "label"]]
    skills = get_accuracy(df, true_labels=true_labels, by="worker").rename("skill")
    return skills, ck_vote(df, skills)


def ck_zbs(df: pd.DataFrame, n_iter: int = 100, lr_init: float = 1.0, lr_steps_to_reduce: int = 20,
           lr_reduce_factor: float = 0.5, eps: float = 1e-5) -> tuple[pd.Series, CkMajorityVote]:
    """crowd-kit 1.4.2, zero_based_skill.py: skills from 1/K + eps, moved n_iter times toward the accuracy
    against the skill-weighted vote; predict = the vote weighted by them."""
    df = df[["task", "worker", "label"]]
    skills = pd.Series(1 / df.label.unique().size + eps, index=pd.Index(df.worker.unique(), name="worker"))
    lr = lr_init
    for iteration in range(1, n_iter + 1):
        if iteration % lr_steps_to_reduce == 0:
            lr *= lr_reduce_factor
        labels = ck_vote(df, skills).labels_
        skills = skills + lr * (get_accuracy(df, labels, by="worker") - skills)
    skills = skills.rename("skill")
    return skills, ck_vote(df, skills)


ZBS_ITERS = {"bluebird": 100}  # crowd-kit's 100 steps cost ~2 s a crowd; 25 elsewhere


@functools.lru_cache(maxsize=None)
def reference(source: str, method: str):
    """crowd-kit's fitted model (or, for the three broken classes, (skills_, the weighted vote)); cached."""
    df, truth = crowd(source)
    if method == "mv":
        return CkMajorityVote().fit(df)
    if method == "mv-weighted":
        return CkMajorityVote().fit(df, worker_skills(df))
    if method == "ds":
        return CkDawidSkene().fit(df)
    if method == "ds-gold":
        return CkDawidSkene().fit(df, true_labels=gold_subset(truth))
    if method == "onecoin":
        return CkOneCoin().fit(df)
    if method == "wawa":
        return ck_wawa(df)
    if method == "zbs":
        return ck_zbs(df, n_iter=ZBS_ITERS.get(source, 25))
    raise KeyError(method)


def worker_skills(df: pd.DataFrame) -> pd.Series:
    workers = pd.unique(df["worker"])
    return pd.Series(np.random.default_rng(5).uniform(0.05, 1.0, len(workers)), index=workers)


def gold_subset(truth: pd.Series) -> pd.Series:
    return truth.iloc[::4]


# -- the classes, against crowd-kit on every crowd --------------------------------------------------------------
@pytest.mark.parametrize("source", SOURCES)
def test_majority_vote(source):
    df, _ = crowd(source)
    ours = lf.MajorityVote().fit(df)
    assert_fitted_equal(ours, reference(source, "mv"), ("labels_", "probas_", "skills_"), f"{source} MV")
    ours = lf.MajorityVote().fit(df, worker_skills(df))
    assert_fitted_equal(ours, reference(source, "mv-weighted"), ("labels_", "probas_", "skills_"),
                        f"{source} weighted MV")


@pytest.mark.parametrize("source", SOURCES)
def test_wawa(source):
    df, _ = crowd(source)
    skills, vote = reference(source, "wawa")
    ours = lf.Wawa()
    assert_same(ours.fit_predict(df), vote.labels_, f"{source} Wawa fit_predict")
    assert_same(ours.skills_, skills, f"{source} Wawa skills_")
    assert_same(ours.probas_, vote.probas_, f"{source} Wawa probas_")


@pytest.mark.parametrize("source", ("bluebird", "dog", "web", "synthetic-K5"))
def test_zero_based_skill(source):
    df, _ = crowd(source)
    skills, vote = reference(source, "zbs")
    ours = lf.ZeroBasedSkill(n_iter=ZBS_ITERS.get(source, 25))
    assert_same(ours.fit_predict_proba(df), vote.probas_, f"{source} ZBS fit_predict_proba")
    assert_same(ours.skills_, skills, f"{source} ZBS skills_")
    assert_same(ours.labels_, vote.labels_, f"{source} ZBS labels_")


@pytest.mark.parametrize("source", SOURCES)
def test_gold_majority_vote(source):
    """On the tasks with gold; crowd-kit's predict over all tasks raises where a worker has no gold answer."""
    df, truth = crowd(source)
    df = df[df["task"].isin(truth.index)]
    skills, vote = ck_gold(df, truth)
    ours = lf.GoldMajorityVote().fit(df, truth)
    assert_same(ours.skills_, skills, f"{source} GoldMV skills_")
    assert_same(ours.predict(df), vote.labels_, f"{source} GoldMV predict")
    assert_same(ours.predict_proba(df), vote.probas_, f"{source} GoldMV predict_proba")


@pytest.mark.parametrize("name", ("Wawa", "ZeroBasedSkill", "GoldMajorityVote"))
def test_fit_then_predict_is_fit_predict(name):
    """fit_predict runs fit and predict's vote in one engine call; fit then predict runs them apart."""
    df, truth = crowd("synthetic-K10")
    args = (truth,) if name == "GoldMajorityVote" else ()
    together, apart = getattr(lf, name)(), getattr(lf, name)()
    together.fit_predict(df, *args)
    apart.fit(df, *args).predict(df)
    for attr in ("skills_", "labels_", "probas_"):
        assert_same(getattr(together, attr), getattr(apart, attr), f"{name} {attr}", dict(check_exact=True))


@pytest.mark.parametrize("n_iter", (0, 1, 21))
def test_zero_based_skill_schedule(n_iter):
    """No step (the start, by first appearance), one, and past the first rate cut."""
    df, _ = crowd("synthetic-K10")
    skills, vote = ck_zbs(df, n_iter=n_iter, lr_init=0.7, lr_steps_to_reduce=10, lr_reduce_factor=0.3)
    ours = lf.ZeroBasedSkill(n_iter=n_iter, lr_init=0.7, lr_steps_to_reduce=10, lr_reduce_factor=0.3)
    assert_same(ours.fit_predict(df), vote.labels_, f"ZBS n_iter={n_iter} labels_")
    assert_same(ours.skills_, skills, f"ZBS n_iter={n_iter} skills_")
    with pytest.raises(ZeroDivisionError):
        lf.ZeroBasedSkill(lr_steps_to_reduce=0).fit(df)


def test_gold_majority_vote_refuses_workers_without_gold():
    """crowd-kit's predict: MajorityVote(on_missing_skill="error") over workers that fit never saw on gold."""
    df, truth = crowd("dog")
    with pytest.raises(ValueError, match="Skill value is missing"):
        ck_gold(df, truth.iloc[::3])
    with pytest.raises(ValueError, match="Skill value is missing"):
        lf.GoldMajorityVote().fit_predict(df, truth.iloc[::3])


DS_ATTRS = ("labels_", "probas_", "priors_", "errors_", "loss_history_")


@pytest.mark.parametrize("source", (*SMALL, "rte"))
def test_dawid_skene(source):
    df, _ = crowd(source)
    ours = lf.DawidSkene().fit(df)
    assert_fitted_equal(ours, reference(source, "ds"), DS_ATTRS, f"{source} DS")


@pytest.mark.parametrize("source", ("bluebird", "dog", "synthetic-K5"))
def test_dawid_skene_with_true_labels(source):
    df, truth = crowd(source)
    ours = lf.DawidSkene().fit(df, true_labels=gold_subset(truth))
    assert_fitted_equal(ours, reference(source, "ds-gold"), DS_ATTRS, f"{source} DS with true_labels")
    gold = gold_subset(truth)
    gold = gold[gold.index.isin(df["task"])]
    fixed = ours.probas_.loc[gold.index].to_numpy()
    assert (fixed.max(axis=1) == 1.0).all() and (ours.labels_.loc[gold.index] == gold).all()


@pytest.mark.parametrize("source", ("bluebird", "dog", "synthetic-K5"))
def test_one_coin(source):
    df, _ = crowd(source)
    ours = lf.OneCoinDawidSkene().fit(df)
    assert_fitted_equal(ours, reference(source, "onecoin"), (*DS_ATTRS, "skills_"), f"{source} one-coin")


def initial_error_tables(df: pd.DataFrame, every: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts for every `every`-th worker, sorted columns; counts of all workers, columns reversed)."""
    rng = np.random.default_rng(seed)
    workers, classes = pd.unique(df["worker"]), np.sort(df["label"].unique())
    tables = []
    for chosen in (workers[::every], workers):
        index = pd.MultiIndex.from_product([chosen, classes], names=["worker", "label"])
        counts = rng.integers(0, 5, (len(index), len(classes))) + 3 * np.tile(np.eye(len(classes)), (len(chosen), 1))
        tables.append(pd.DataFrame(counts.astype(float), index=index, columns=classes))
    partial, full = tables
    return partial, full[full.columns[::-1]]


@pytest.mark.parametrize("source", ("bluebird", "synthetic-K5"))
@pytest.mark.parametrize("strategy", ("addition", "assign"))
def test_dawid_skene_initial_error(source, strategy):
    """Both strategies, with and without true_labels; assign's table also as probabilities, columns reordered
    (crowd-kit's first E-step then lists the classes sorted). crowd-kit normalises an "assign" table in place,
    so each side gets its own copy."""
    df, truth = crowd(source)
    partial, full = initial_error_tables(df, 3, 7)
    table = partial if strategy == "addition" else full / full.groupby("worker").sum()
    for gold in (None, gold_subset(truth)):
        theirs = CkDawidSkene(initial_error_strategy=strategy).fit(df, true_labels=gold, initial_error=table.copy())
        ours = lf.DawidSkene(initial_error_strategy=strategy).fit(df, true_labels=gold, initial_error=table.copy())
        assert_fitted_equal(ours, theirs, DS_ATTRS, f"{source} DS {strategy} gold={gold is not None}",
                            TOL["initial_error"])


def test_initial_error_edge_cases():
    df, _ = crowd("bluebird")
    partial, full = initial_error_tables(df, 3, 8)
    # assign needs every worker; the strategy must be known; the index must be (worker, label)
    for kwargs, table in ((dict(initial_error_strategy="assign"), partial),
                          (dict(initial_error_strategy="bogus"), partial),
                          (dict(initial_error_strategy="addition"), partial.reset_index(level="label"))):
        with pytest.raises(ValueError) as theirs:
            CkDawidSkene(**kwargs).fit(df, initial_error=table.copy())
        with pytest.raises(ValueError) as ours:
            lf.DawidSkene(**kwargs).fit(df, initial_error=table.copy())
        assert str(ours.value).split(":")[0] == str(theirs.value).split(":")[0]
    # n_iter=0: errors_ are the initial tables themselves; no strategy: initial_error is ignored
    for kwargs in (dict(initial_error_strategy="addition", n_iter=0), dict(n_iter=3)):
        theirs = CkDawidSkene(**kwargs).fit(df, initial_error=partial.copy())
        ours = lf.DawidSkene(**kwargs).fit(df, initial_error=partial.copy())
        assert_fitted_equal(ours, theirs, DS_ATTRS, f"DS {kwargs}")


# -- edge cases ---------------------------------------------------------------------------------------------------
CLASSES = ("MajorityVote", "Wawa", "ZeroBasedSkill", "GoldMajorityVote", "DawidSkene", "OneCoinDawidSkene")
EDGE = {
    "single worker": pd.DataFrame({"task": [3, 1, 2, 1], "worker": ["w"] * 4, "label": [1, 0, 1, 1]}),
    "ties": pd.DataFrame({"task": [1, 1, 2, 2, 3, 3, 3], "worker": list("ababbca"),
                          "label": ["y", "x", "x", "y", "z", "x", "y"]}),
    "one class": pd.DataFrame({"task": [1, 2, 2], "worker": ["a", "a", "b"], "label": [5, 5, 5]}),
    "repeated answers": pd.DataFrame({"task": [1, 1, 1, 2, 2], "worker": list("aabab"), "label": [0, 0, 1, 1, 1]}),
    "bool labels": pd.DataFrame({"task": [1, 1, 2, 2], "worker": list("abab"), "label": [True, False, True, True]}),
    # task 1 has 40 answers, past the 32 under which repeats are found by a scan (majority_vote.cpp): 10 workers
    # answer it 4 times each, some repeating an answer (worker a: 0, 2, 1, 0)
    "many answers to a task": pd.DataFrame({
        "task": [1] * 40 + [2, 2, 2, 3, 3], "worker": [*("abcdefghij" * 4), "a", "b", "c", "d", "e"],
        "label": [(k // 10 + k) % 3 for k in range(40)] + [0, 1, 0, 2, 2]}),
}
EMPTY = {
    "empty object columns": pd.DataFrame(columns=["task", "worker", "label"]),
    "empty int columns": pd.DataFrame({"task": [1], "worker": [2], "label": [3]}).iloc[:0],
    "empty str columns": pd.DataFrame({"task": ["a"], "worker": ["b"], "label": ["c"]}).iloc[:0],
}
ATTRS = ("labels_", "probas_", "skills_", "priors_", "errors_", "loss_history_")


EDGE_ITERS = 10  # ZeroBasedSkill's steps on the edge cases (crowd-kit's 100 take ~2 s each)


def run_both(name: str, df: pd.DataFrame, *args):
    """(crowd-kit's outcome, ours): the fitted model, or the exception raised; fit_predict for crowd-kit's
    working classes, the references for the three broken ones."""
    ours = lf.ZeroBasedSkill(n_iter=EDGE_ITERS) if name == "ZeroBasedSkill" else getattr(lf, name)()
    outcomes = []
    for side in ("crowd-kit", "ours"):
        try:
            if side == "ours":
                ours.fit_predict(df, *args)
                outcomes.append(ours)
            elif name in ("Wawa", "ZeroBasedSkill", "GoldMajorityVote"):
                zbs = functools.partial(ck_zbs, n_iter=EDGE_ITERS)
                ref = {"Wawa": ck_wawa, "ZeroBasedSkill": zbs, "GoldMajorityVote": ck_gold}[name](df, *args)
                outcomes.append(ref)
            else:
                theirs = getattr(crowdkit.aggregation, name)()
                theirs.fit_predict(df, *args)
                outcomes.append(theirs)
        except Exception as exc:  # noqa: BLE001 - the exception is what is compared
            outcomes.append(exc)
    return outcomes


def assert_same_outcome(name: str, case: str, theirs, ours) -> None:
    what = f"{name} on {case}"
    if isinstance(theirs, Exception) or isinstance(ours, Exception):
        assert type(ours) is type(theirs), f"{what}: crowd-kit gives {theirs!r}, ours {ours!r}"
        return
    if isinstance(theirs, tuple):  # a reference: (skills_, the weighted vote)
        assert_same(ours.skills_, theirs[0], f"{what} skills_")
        assert_fitted_equal(ours, theirs[1], ("labels_", "probas_"), what)
    else:
        assert_fitted_equal(ours, theirs, ATTRS, what)


@pytest.mark.parametrize("case", [*EDGE, *EMPTY])
@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # crowd-kit's ZBS start on no rows: 1 / 0
def test_edge_cases_match_crowdkit(name, case):
    df = {**EDGE, **EMPTY}[case]
    args = ()
    if name == "GoldMajorityVote":  # gold for tasks 1 and 2: the first and the last answer
        args = (pd.Series({1: df["label"].iloc[0], 2: df["label"].iloc[-1]}) if len(df) else pd.Series({1: 0}),)
    theirs, ours = run_both(name, df, *args)
    assert_same_outcome(name, case, theirs, ours)


def test_empty_input_results():
    """What crowd-kit returns without rows, spelled out (for int columns)."""
    df = EMPTY["empty int columns"]
    ds = lf.DawidSkene().fit(df)
    assert ds.probas_.empty and ds.errors_.empty and ds.priors_.name == "prior" and ds.labels_.name == "agg_label"
    assert not hasattr(ds, "loss_history_")  # crowd-kit's early exit leaves it unset
    mv = lf.MajorityVote().fit(df)
    assert mv.labels_.dtype == object and mv.probas_.index.name == "task" and mv.skills_.index.name == "worker"
    with pytest.raises(ZeroDivisionError):  # crowd-kit: 1 / data.label.unique().size
        lf.ZeroBasedSkill().fit(df)


@pytest.mark.parametrize("name", CLASSES)
def test_missing_column_raises_keyerror_like_crowdkit(name):
    df = pd.DataFrame({"task": [1, 2], "worker": ["a", "b"]})
    args = (pd.Series({1: 0}),) if name == "GoldMajorityVote" else ()
    theirs, ours = run_both(name, df, *args)
    assert isinstance(theirs, KeyError) and isinstance(ours, KeyError), (theirs, ours)
    assert str(ours) == str(theirs)


def test_majority_vote_ties_follow_crowdkits_column_order():
    """Plain vote: the label seen first wins a tie (value_counts().unstack()); weighted: the smallest label."""
    df = pd.DataFrame({"task": [1, 1, 2, 2], "worker": list("abab"), "label": ["z", "a", "a", "z"]})
    assert lf.MajorityVote().fit_predict(df).tolist() == CkMajorityVote().fit_predict(df).tolist() == ["z", "z"]
    skills = pd.Series({"a": 0.5, "b": 0.5})
    ours, theirs = lf.MajorityVote().fit_predict(df, skills), CkMajorityVote().fit_predict(df, skills)
    assert ours.tolist() == theirs.tolist() == ["a", "a"]


@pytest.mark.parametrize("mode,default", [("error", None), ("ignore", None), ("value", 0.25), ("value", None),
                                          ("error", 0.5), ("bogus", None)])
def test_majority_vote_missing_skills(mode, default):
    df, _ = crowd("dog")
    skills = worker_skills(df).iloc[::2]
    outcomes = []
    for cls in (CkMajorityVote, lf.MajorityVote):
        try:
            outcomes.append(cls(default_skill=default, on_missing_skill=mode).fit(df, skills))
        except ValueError as exc:
            outcomes.append(exc)
    assert_same_outcome("MajorityVote", f"on_missing_skill={mode}", *outcomes)


def test_zero_skills_leave_no_label():
    """All of a task's workers weigh 0: every share is NaN and crowd-kit's idxmax raises; so do we."""
    df = pd.DataFrame({"task": [1, 1, 2], "worker": list("aba"), "label": [0, 1, 1]})
    skills = pd.Series({"a": 0.0, "b": 1.0})
    for cls in (CkMajorityVote, lf.MajorityVote):
        with pytest.raises(ValueError):
            cls().fit(df, skills)


def test_negative_and_zero_total_skills_as_crowdkit():
    df = pd.DataFrame({"task": [1, 1, 2, 3, 3], "worker": list("abaab"), "label": [0, 1, 1, 0, 1]})
    skills = pd.Series({"a": -1.0, "b": 1.0})
    assert_fitted_equal(lf.MajorityVote().fit(df, skills), CkMajorityVote().fit(df, skills),
                        ("labels_", "probas_", "skills_"), "negative skills")


def test_predict_before_fit_raises():
    df, _ = crowd("bluebird")
    for cls in (lf.Wawa, lf.ZeroBasedSkill, lf.GoldMajorityVote):
        with pytest.raises(NotFittedError):
            cls().predict(df)
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    with pytest.raises(AttributeError):
        lf.DawidSkene().labels_


def test_nan_ids_are_refused():
    df = pd.DataFrame({"task": [1, None], "worker": ["a", "b"], "label": [0, 1]})
    with pytest.raises(ValueError, match="task must not contain NaN"):
        lf.MajorityVote().fit(df)


def test_true_labels_outside_the_classes_are_refused():
    df, _ = crowd("bluebird")
    with pytest.raises(ValueError, match="no answer in data has"):
        lf.DawidSkene().fit(df, true_labels=pd.Series({0: 7}))


# -- the API itself -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CLASSES)
def test_signatures_match_crowdkit(name):
    """crowd-kit's constructor arguments, in order with their defaults, then our keyword-only n_threads; the same
    fit / predict methods with the same arguments."""
    ck_cls, ours_cls = getattr(crowdkit.aggregation, name), getattr(lf, name)
    theirs = [(p.name, p.default) for p in inspect.signature(ck_cls).parameters.values()]
    ours = inspect.signature(ours_cls).parameters
    assert [(p.name, p.default) for p in ours.values() if p.name != "n_threads"] == theirs
    assert ours["n_threads"].kind is inspect.Parameter.KEYWORD_ONLY and ours["n_threads"].default is None
    for method in ("fit", "fit_predict", "fit_predict_proba", "predict", "predict_proba"):
        assert hasattr(ck_cls, method) == hasattr(ours_cls, method), method
        if hasattr(ck_cls, method):
            want = [(p.name, p.default) for p in inspect.signature(getattr(ck_cls, method)).parameters.values()]
            got = [(p.name, p.default) for p in inspect.signature(getattr(ours_cls, method)).parameters.values()]
            assert got == want, f"{name}.{method}"


def test_references_are_crowdkits_code(monkeypatch):
    """The references above equal crowd-kit's own Wawa, ZeroBasedSkill and GoldMajorityVote once only their
    check_is_fitted (what breaks under scikit-learn >= 1.6) is replaced by a plain attribute check."""
    from crowdkit.aggregation.classification import gold_majority_vote, wawa, zero_based_skill

    def check_is_fitted(estimator, attributes):
        if getattr(estimator, attributes, None) is None:
            raise NotFittedError(attributes)

    for module in (wawa, zero_based_skill, gold_majority_vote):
        monkeypatch.setattr(module, "check_is_fitted", check_is_fitted)
    df, truth = crowd("bluebird")
    for theirs, (skills, vote) in ((crowdkit.aggregation.Wawa(), ck_wawa(df)),
                                   (crowdkit.aggregation.ZeroBasedSkill(n_iter=10), ck_zbs(df, n_iter=10)),
                                   (crowdkit.aggregation.GoldMajorityVote(), ck_gold(df, truth))):
        args = (truth,) if isinstance(theirs, crowdkit.aggregation.GoldMajorityVote) else ()
        theirs.fit_predict(df, *args)
        assert_same(theirs.skills_, skills, f"{type(theirs).__name__} skills_", dict(check_exact=True))
        assert_same(theirs.probas_, vote.probas_, f"{type(theirs).__name__} probas_", dict(check_exact=True))


# -- threads ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def big_crowd() -> tuple[pd.DataFrame, pd.Series]:
    """Large enough that every parallel loop splits across threads (thousands of tasks and workers)."""
    c = make_crowd(6000, 400, 5, 6, seed=21)
    df = c.frame().sample(frac=1.0, random_state=21).reset_index(drop=True)
    return df, pd.Series(c.truth[::3], index=pd.RangeIndex(0, 6000, 3))


FITS = {
    "MajorityVote": lambda est, df, gold: est.fit(df),
    "Wawa": lambda est, df, gold: est.fit_predict(df),
    "ZeroBasedSkill": lambda est, df, gold: est.fit_predict(df),
    "GoldMajorityVote": lambda est, df, gold: est.fit(df, gold).predict(df),
    "DawidSkene": lambda est, df, gold: est.fit(df, true_labels=gold),
    "OneCoinDawidSkene": lambda est, df, gold: est.fit(df),
}


@pytest.mark.parametrize("name", CLASSES)
def test_results_do_not_depend_on_thread_count(name):
    df, gold = big_crowd()
    fitted = []
    for n_threads in (1, 2):
        est = getattr(lf, name)(n_threads=n_threads)
        FITS[name](est, df, gold)
        fitted.append(est)
    one, two = fitted
    for attr in ATTRS:
        if hasattr(one, attr):
            assert_same(getattr(two, attr), getattr(one, attr), f"{name} {attr}, 2 threads vs 1",
                        dict(check_exact=True))


# -- the frame layer all ten classes share (luab_fast/crowdkit/_frame.py) --------------------------------------------
ALL_FITS = {**FITS, "GLAD": lambda est, df, gold: est.fit(df), "MACE": lambda est, df, gold: est.fit(df),
            "KOS": lambda est, df, gold: est.fit(df), "MMSR": lambda est, df, gold: est.fit(df).predict_score(df)}
ALL_ATTRS = (*ATTRS, "scores_", "alphas_", "betas_", "thetas_", "spamming_")


def test_compiled_factorize_takes_a_strided_column():
    """df.iloc[::3]'s columns are strided views: the compiled table once refused them ("values must be
    C-contiguous"); the column is copied to a contiguous array first."""
    from luab_fast.aggregate._input import _compiled_factorize, encode

    df = make_crowd(300, 30, 3, 4, seed=7).frame()
    part = df.iloc[::3]
    assert not part["task"].to_numpy(np.int64).flags.c_contiguous  # the case the bug needed
    for sort in (False, True):
        codes, uniques = _compiled_factorize(part["task"], sort=sort)
        ref_codes, ref_uniques = pd.factorize(part["task"], sort=sort)
        np.testing.assert_array_equal(codes, ref_codes)
        pd.testing.assert_index_equal(uniques, pd.Index(ref_uniques))
    strided, contiguous = encode(part), encode(part.copy())
    for field in ("task", "worker", "label"):
        np.testing.assert_array_equal(getattr(strided, field), getattr(contiguous, field))


@pytest.mark.parametrize("name", sorted(ALL_FITS))
def test_every_class_fits_a_strided_frame_as_its_copy(name):
    c = make_crowd(300, 30, 8, 2, seed=8)  # every third row still leaves each task 2+ answers
    df, gold = c.frame(), pd.Series(c.truth, name="truth").rename_axis("task")
    fitted = []
    for data in (df.iloc[::3], df.iloc[::3].copy()):
        est = getattr(lf, name)()
        ALL_FITS[name](est, data, gold.iloc[::2])
        fitted.append(est)
    strided, contiguous = fitted
    for attr in ALL_ATTRS:
        if not hasattr(contiguous, attr):
            continue
        ours, theirs = getattr(strided, attr), getattr(contiguous, attr)
        if isinstance(theirs, np.ndarray):  # MACE's thetas_ and spamming_
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{name} {attr}, strided frame", strict=True)
        else:
            assert_same(ours, theirs, f"{name} {attr}, strided frame", dict(check_exact=True))


def test_exceptions_are_shared_and_keep_crowdkits_types():
    from luab_fast.crowdkit import _frame, glad, kos, mace, mmsr

    assert glad.EmptyCrowdError is mace.EmptyCrowdError is _frame.EmptyCrowdError
    assert glad.MissingColumnsError is kos.MissingColumnsError is _frame.MissingColumnsError
    expected = {_frame.EmptyCrowdError: (ValueError, ZeroDivisionError),
                _frame.MissingColumnsError: (ValueError, KeyError, AttributeError),
                kos.KOSZeroScoreError: (ValueError, KeyError), mmsr.SingleLabelError: (ValueError, ZeroDivisionError),
                _frame.NotFittedError: (ValueError, AttributeError)}
    for error, bases in expected.items():
        assert all(issubclass(error, base) for base in bases), error
    assert str(_frame.MissingColumnsError("no 'label' column")) == "no 'label' column"  # not KeyError's quotes
    assert str(kos.KOSZeroScoreError("task 1 has a score of 0")) == "task 1 has a score of 0"
