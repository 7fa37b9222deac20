"""crowd-kit's ``GoldMajorityVote`` (crowd-kit 1.4.2, aggregation/classification/gold_majority_vote.py).

crowd-kit 1.4.2's GoldMajorityVote fails at ``predict`` under scikit-learn >= 1.6 (its ``check_is_fitted`` raises
about ``__sklearn_tags__``); this class follows its code as written: each worker's accuracy on the tasks with a
known true label, then the vote weighted by those accuracies (a worker without gold answers has no skill, so
``predict`` raises, as crowd-kit's MajorityVote does).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._ext import require_ext
from ._frame import EncodedCrowd, threads, worker_series
from .majority_vote import SkillWeightedVote, empty_skills, worker_accuracy


class GoldMajorityVote(SkillWeightedVote):
    """Majority vote weighted by each worker's accuracy on gold tasks (``true_labels``: Series by task).

    Keyword-only (luab_fast): ``n_threads``, None for OpenMP's default; results do not depend on it.
    Fitted: ``skills_`` (Series "skill" by worker, sorted; workers with gold answers only) by ``fit``; ``labels_``
    and ``probas_`` by ``predict``, ``predict_proba``, ``fit_predict`` and ``fit_predict_proba``.
    """

    def __init__(self, *, n_threads: int | None = None) -> None:
        self.n_threads = n_threads

    def fit(self, data: pd.DataFrame, true_labels: pd.Series) -> "GoldMajorityVote":  # type: ignore[override]
        return self._fit(data, true_labels)

    def fit_predict(self, data: pd.DataFrame, true_labels: pd.Series) -> pd.Series:  # type: ignore[override]
        self._fit_predict(data, true_labels)
        return self.labels_

    def fit_predict_proba(self, data: pd.DataFrame, true_labels: pd.Series) -> pd.DataFrame:  # type: ignore[override]
        self._fit_predict(data, true_labels)
        return self.probas_

    def _fit_and_vote(self, frame: pd.DataFrame, crowd: EncodedCrowd,
                      true_labels: pd.Series) -> tuple[pd.Series, np.ndarray | None, int]:
        C = require_ext("GoldMajorityVote.fit_predict")
        hits, counted, codes, undefined = C.aggregate.skill_weighted_vote(
            *crowd.arrays(), reference=gold_reference(true_labels, crowd), n_threads=threads(self.n_threads))
        present = counted > 0
        return worker_series(hits[present] / counted[present], crowd.workers[present]), codes, undefined

    def _fit_skills(self, frame: pd.DataFrame, crowd: EncodedCrowd, true_labels: pd.Series) -> None:
        if crowd.task.size == 0:
            self._set_fitted(skills_=empty_skills(frame))
            return
        self._set_fitted(skills_=worker_accuracy(crowd, gold_reference(true_labels, crowd), self.n_threads))


def gold_reference(true_labels: pd.Series, crowd: EncodedCrowd) -> np.ndarray:
    """Each dense task's true class for get_accuracy: its class index; n_classes for a true label no answer has
    (it matches no answer but counts, as in crowd-kit's comparison); -1 for a task without a true label."""
    if not isinstance(true_labels, pd.Series):
        true_labels = pd.Series(true_labels)
    if not true_labels.index.is_unique:  # crowd-kit's join would repeat those tasks' answers
        raise ValueError("true_labels must have one label per task; its index has duplicates")
    # looked up from the true labels' side: there are fewer of them than tasks (the benchmark gives a third), and
    # reindexing them to every task first cost twice the lookups
    true_labels = true_labels[true_labels.notna()]
    at = _positions(crowd.tasks, true_labels.index)  # each true label's task, -1 for a task no answer names
    codes = crowd.classes.get_indexer(true_labels.to_numpy())
    ref = np.full(crowd.tasks.size, -1, dtype=np.int64)
    ref[at[at >= 0]] = np.where(codes >= 0, codes, crowd.n_classes)[at >= 0]
    return ref


def _positions(index: pd.Index, keys: pd.Index) -> np.ndarray:
    """``index.get_indexer(keys)`` for a unique ``index``; by binary search where both hold integers and ``index``
    is sorted (GoldMajorityVote's task order), which skips building a hash table of every task on each fit."""
    if index.dtype.kind in "iu" and keys.dtype.kind in "iu" and index.is_monotonic_increasing and len(index):
        values, wanted = index.to_numpy(), keys.to_numpy()
        at = np.minimum(np.searchsorted(values, wanted), len(values) - 1)
        return np.where(values[at] == wanted, at, -1)
    return index.get_indexer(keys)
