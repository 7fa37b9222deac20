"""Hostile inputs to luab_fast.aggregate: every bad input is a ValueError that names the argument (never a
crash, never a silent clamp), in the Python layer and in the compiled one; unfitted estimators raise
RuntimeError. (Duplicates, id types and unlabelled tasks: test_aggregate_ids.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.aggregate import assert_close

from luab_fast import _ext
from luab_fast.aggregate import BayesAggregator, DawidSkene, MajorityVote, OneCoinDawidSkene, make_crowd

TOL = {"same_fit": 1e-12}
ESTIMATORS = {"mv": MajorityVote, "ds": DawidSkene, "onecoin": OneCoinDawidSkene, "bayes": BayesAggregator}


@pytest.fixture
def crowd():
    return make_crowd(60, 12, 3, 3, seed=4)


def _nan_at(values: np.ndarray, pos: int) -> np.ndarray:
    out = values.astype(np.float64)
    out[pos] = np.nan
    return out


# (case id) -> (build data + fit kwargs from a SyntheticCrowd, regex the ValueError must match)
BAD_DATA = {
    "negative task id": (lambda c: ((c.task - 1, c.worker, c.label), {}), r"^task must be >= 0"),
    "negative worker id": (lambda c: ((c.task, c.worker - 3, c.label), {}), r"^worker must be >= 0"),
    "negative label": (lambda c: ((c.task, c.worker, c.label - 1), {}), r"^label must be >= 0"),
    "label >= n_classes (arrays)": (lambda c: (c.arrays, {"n_classes": 2}), r"label must be < n_classes=2"),
    "label >= n_classes (DataFrame)": (lambda c: (c.frame(), {"n_classes": 2}), r"label must be < n_classes=2"),
    "NaN label (DataFrame)": (lambda c: (c.frame().assign(label=_nan_at(c.label, 7)), {}), r"^label .*NaN"),
    "NaN label (float arrays)": (lambda c: ((c.task, c.worker, _nan_at(c.label, 7)), {}), r"^label .*NaN"),
    "inf label (float arrays)": (lambda c: ((c.task, c.worker, np.where(c.label == 0, np.inf, c.label)), {}),
                                 r"^label .*inf"),
    "NaN task (DataFrame)": (lambda c: (c.frame().assign(task=_nan_at(c.task, 2)), {}), r"^task .*NaN"),
    "None worker (DataFrame)": (lambda c: (c.frame().assign(worker=c.frame().worker.astype(object).where(
        np.arange(c.task.size) != 3, None)), {}), r"^worker .*NaN/None"),
    "arrays of different lengths": (lambda c: ((c.task, c.worker[:-1], c.label), {}), r"task, worker and label"),
    "empty DataFrame": (lambda c: (c.frame().iloc[:0], {}), r"data is empty"),
    "empty arrays": (lambda c: ((c.task[:0], c.worker[:0], c.label[:0]), {}), r"data is empty"),
    "missing column": (lambda c: (c.frame().drop(columns="worker"), {}), r"missing \['worker'\]"),
    "renamed column (item)": (lambda c: (c.frame().rename(columns={"task": "item"}), {}), r"missing \['task'\]"),
    "non-integer float task ids": (lambda c: ((c.task + 0.5, c.worker, c.label), {}), r"^task must hold integers"),
    "non-integer float worker ids": (lambda c: ((c.task, c.worker * 0.5, c.label), {}), r"^worker must hold integ"),
    "string array ids": (lambda c: ((c.task.astype(str), c.worker, c.label), {}), r"^task must be an integer"),
    "2-D task array": (lambda c: ((c.task[:, None], c.worker, c.label), {}), r"^task must be a 1-D array"),
    "two arrays": (lambda c: ((c.task, c.worker), {}), r"\(task, worker, label\), got 2"),
    "stacked ndarray": (lambda c: (np.stack(c.arrays), {}), r"^data must be a pandas DataFrame"),
    "n_classes = 0": (lambda c: (c.arrays, {"n_classes": 0}), r"^n_classes must be a positive integer"),
    "n_tasks below max id": (lambda c: (c.arrays, {"n_tasks": 10}), r"task must be < n_tasks=10"),
    "n_workers below max id": (lambda c: (c.arrays, {"n_workers": 2}), r"worker must be < n_workers=2"),
    "n_tasks with a DataFrame": (lambda c: (c.frame(), {"n_tasks": 100}), r"n_tasks/n_workers"),
}


@pytest.mark.parametrize("method", ESTIMATORS)
@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_raises_value_error_naming_argument(crowd, case, method):
    build, pattern = BAD_DATA[case]
    data, kwargs = build(crowd)
    with pytest.raises(ValueError, match=pattern):
        ESTIMATORS[method]().fit(data, **kwargs)


DS, OC, BA, MV = DawidSkene, OneCoinDawidSkene, BayesAggregator, MajorityVote
NAN33 = np.full((3, 3), np.nan)
# (case id) -> (estimator class, constructor kwargs, fit kwargs, regex the ValueError must match)
BAD_PARAMS = {
    "DS n_iter < 0": (DS, {"n_iter": -1}, {}, r"^n_iter must be"),
    "DS n_iter float": (DS, {"n_iter": 2.5}, {}, r"^n_iter must be"),
    "DS tol < 0": (DS, {"tol": -1e-3}, {}, r"^tol must be a number >= 0"),
    "DS tol NaN": (DS, {"tol": float("nan")}, {}, r"^tol must be a number >= 0"),
    "DS prior < 0": (DS, {"prior": -0.1}, {}, r"^prior and prior_diag must be >= 0"),
    "DS prior_diag < 0": (DS, {"prior_diag": -1.0}, {}, r"prior_diag must be >= 0"),
    "DS prior wrong K": (DS, {"prior": np.ones((2, 2))}, {}, r"^prior must be .* K=3"),
    "DS prior 1-D": (DS, {"prior": np.ones(3)}, {}, r"^prior must be"),
    "DS prior NaN": (DS, {"prior": NAN33}, {}, r"^prior pseudo-counts must be finite"),
    "one-coin prior 3 numbers": (OC, {"prior": (1.0, 2.0, 3.0)}, {}, r"^prior must be \(right, wrong\)"),
    "one-coin prior < 0": (OC, {"prior": (1.0, -1.0)}, {}, r"^prior must be \(right, wrong\)"),
    "DS task_prior rows": (DS, {}, {"task_prior": np.ones((59, 3))}, r"^task_prior must have shape \(60, 3\)"),
    "DS task_prior cols": (DS, {}, {"task_prior": np.ones((60, 4))}, r"^task_prior must have shape"),
    "DS task_prior NaN": (DS, {}, {"task_prior": np.full((60, 3), np.nan)}, r"^task_prior must hold finite"),
    "DS task_prior frame missing tasks": (DS, {}, {"task_prior": pd.DataFrame(np.ones((10, 3)))},
                                          r"^task_prior has no row for tasks"),
    "Bayes learner_prob shape": (BA, {}, {"learner_prob": np.ones((60, 4))},
                                 r"must have shape \(60, 3\) \(tasks × classes\), got \(60, 4\)"),
    "Bayes criterion": (BA, {"criterion": "medium"}, {}, r"^criterion must be 'soft' or 'hard'"),
    "Bayes max_iter < 0": (BA, {"max_iter": -1}, {}, r"^max_iter must be"),
    "Bayes prior wrong K": (BA, {"prior": np.ones((2, 2))}, {}, r"^prior must be \[K, K\] or \[W, K, K\]"),
    "Bayes prior wrong W": (BA, {"prior": np.ones((5, 3, 3))}, {}, r"^prior must be .*W=12"),
    "Bayes prior < 0": (BA, {"prior": -np.ones((3, 3))}, {}, r"^prior pseudo-counts"),
    "Bayes global_cm wrong K": (BA, {"global_cm": np.ones((4, 4))}, {}, r"^global_cm must be \[3, 3\]"),
    "Bayes global_cm not square": (BA, {"global_cm": np.ones((3, 2))}, {}, r"^global_cm must be a square"),
    "n_threads = 0": (DS, {"n_threads": 0}, {}, r"^n_threads must be a positive integer"),
    "unknown duplicate policy": (DS, {"on_duplicate": "merge"}, {}, r"^on_duplicate must be one of"),
    "MV skills missing workers": (MV, {}, {"skills": pd.Series({0: 0.9, 1: 0.5})}, r"^skills has no value for work"),
    "MV skills array wrong length": (MV, {}, {"skills": np.ones(3)}, r"^skills must have shape \(12,\)"),
}


@pytest.mark.parametrize("case", BAD_PARAMS)
def test_bad_parameters_raise_value_error_naming_argument(crowd, case):
    cls, init, fit_kwargs, pattern = BAD_PARAMS[case]
    with pytest.raises(ValueError, match=pattern):
        cls(**init).fit(crowd.arrays, **fit_kwargs)


def test_bayes_learner_prob_errors_name_learner_prob(crowd):
    with pytest.raises(ValueError, match=r"^learner_prob must have shape \(60, 3\)"):
        BayesAggregator().fit(crowd.arrays, learner_prob=np.ones((60, 4)))


@pytest.mark.parametrize("eps", [-1e-3, float("nan")])
def test_bayes_rejects_bad_likelihood_epsilon(crowd, eps):
    with pytest.raises(ValueError, match="likelihood_epsilon"):
        BayesAggregator(likelihood_epsilon=eps).fit(crowd.arrays)


def test_skills_missing_worker_filled_by_default_skill(crowd):
    ours = MajorityVote(default_skill=0.25).fit(crowd.arrays, skills=pd.Series({0: 0.9, 1: 0.5}))
    full = np.r_[0.9, 0.5, np.full(10, 0.25)]
    ref = MajorityVote().fit(crowd.arrays, skills=full)
    assert_close(ours.posteriors_, ref.posteriors_, TOL["same_fit"], "MV with default_skill vs explicit skills")


# -- the C++ layer and the fitted-state guard -----------------------------------------------------------
C_CASES = {  # keyword overrides of a valid _C.aggregate.dawid_skene call -> regex
    "int32 task": (lambda c: {"task": c.task.astype(np.int32)}, r"^task must be a int64 array, got dtype int32"),
    "float label": (lambda c: {"label": c.label.astype(np.float64)}, r"^label must be a int64 array"),
    "non-contiguous": (lambda c: {"task": np.repeat(c.task, 2)[::2]}, r"^task must be C-contiguous"),
    "init_post shape": (lambda c: {"init_post": np.ones((60, 2))},
                        r"^init_post must have shape \(60, 3\), got \(60, 2"),
    "init_post float32": (lambda c: {"init_post": np.ones((60, 3), np.float32)}, r"^init_post must be a float64"),
    "task out of range": (lambda c: {"n_tasks": 40, "init_post": np.ones((40, 3))}, r"^task ids must be in \[0, 40\)"),
    "worker out of range": (lambda c: {"n_workers": 5}, r"^worker ids must be in \[0, 5\)"),
    "label out of range": (lambda c: {"n_classes": 2, "init_post": np.ones((60, 2))}, r"^labels must be in \[0, n_cl"),
    "n_iter < 0": (lambda c: {"n_iter": -1}, r"^n_iter must be >= 0"),
}


@pytest.mark.parametrize("case", C_CASES)
def test_compiled_layer_raises_value_error(crowd, case):
    over, pattern = C_CASES[case]
    args = dict(task=crowd.task, worker=crowd.worker, label=crowd.label, n_tasks=60, n_workers=12, n_classes=3,
                init_post=np.full((60, 3), 1 / 3))
    args.update(over(crowd))
    with pytest.raises(ValueError, match=pattern):
        _ext.require_ext("test").aggregate.dawid_skene(**args)


def test_compiled_majority_vote_and_bayes_check_ids(crowd):
    C = _ext.require_ext("test").aggregate
    with pytest.raises(ValueError, match=r"^worker ids must be in \[0, 3\)"):
        C.majority_vote(crowd.task, crowd.worker, crowd.label, 60, 3, 3)
    with pytest.raises(ValueError, match=r"^alpha must have shape \(3, 3\)"):
        C.bayes(crowd.task, crowd.worker, crowd.label, 60, 12, 3, np.ones((2, 2)))


@pytest.mark.parametrize("method", ESTIMATORS)
@pytest.mark.parametrize("attr", ["labels_", "probas_", "classes_"])
def test_unfitted_estimator_raises_runtime_error(method, attr):
    with pytest.raises(RuntimeError, match="not fitted yet"):
        getattr(ESTIMATORS[method](), attr)


def test_partial_fit_rejects_other_input_kind_and_unseen_labels(crowd):
    m = DawidSkene().fit(crowd.frame())
    with pytest.raises(ValueError, match="partial_fit data must be a DataFrame"):
        m.partial_fit(crowd.arrays)
    with pytest.raises(ValueError, match=r"label values \[7\] were not seen"):
        m.partial_fit(pd.DataFrame({"task": [1], "worker": [2], "label": [7]}))
    a = DawidSkene().fit(crowd.arrays)
    with pytest.raises(ValueError, match=r"label must be < n_classes=3"):
        a.partial_fit((np.array([1]), np.array([2]), np.array([5])))
