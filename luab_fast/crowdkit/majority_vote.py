"""crowd-kit's ``MajorityVote`` (crowd-kit 1.4.2, aggregation/classification/majority_vote.py) on the C++ vote.

The shares are crowd-kit's to the bit: a class's score is its votes' count, or the sum of their workers' skills
added as pandas' groupby sum adds (Kahan-compensated, in row order), over the row's total. Rows and columns come in
crowd-kit's order: without skills by first appearance (``value_counts().unstack()``), with skills sorted
(``groupby().sum().unstack()``); ties go to the first class in that column order, as crowd-kit's ``idxmax``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .._ext import require_ext
from ._frame import (
    EncodedCrowd,
    FittedAttributes,
    Lazy,
    NotFittedError,
    check_task_labels,
    empty_labels,
    encode,
    labels_series,
    probas_frame,
    select_columns,
    threads,
    worker_series,
)

ON_MISSING_SKILL = ("error", "ignore", "value")


class MajorityVote(FittedAttributes):
    """The share of each task's votes per class (weighted by worker ``skills`` when given); the label with the
    largest share.

    Args (crowd-kit's): ``default_skill``, the skill of a worker that ``skills`` lacks, used only with
    ``on_missing_skill="value"``; ``on_missing_skill``: "error" (raise), "ignore" (drop that worker's answers)
    or "value". Keyword-only (luab_fast): ``n_threads``, None for OpenMP's default; results do not depend on it.

    Fitted: ``labels_`` (Series "agg_label" by task), ``probas_`` (task × label), ``skills_`` (each worker's share
    of distinct answers equal to ``labels_``, Series "skill" by worker, sorted).
    """

    def __init__(self, default_skill: float | None = None, on_missing_skill: str = "error", *,
                 n_threads: int | None = None) -> None:
        self.default_skill = default_skill
        self.on_missing_skill = on_missing_skill
        self.n_threads = n_threads

    def fit(self, data: pd.DataFrame, skills: pd.Series | None = None) -> "MajorityVote":
        frame = select_columns(data)
        n_threads = threads(self.n_threads)
        if skills is None:
            crowd = encode(frame, tasks="first", workers="sorted", labels="first")
            weights = None
        else:
            crowd = encode(frame, tasks="sorted", workers="sorted", labels="sorted")
            crowd, weights = self._weights(crowd, skills)
        if crowd.task.size == 0:
            self._fit_empty(frame, skills)
            return self
        self._fit_crowd(crowd, weights, n_threads)
        return self

    def fit_predict_proba(self, data: pd.DataFrame, skills: pd.Series | None = None) -> pd.DataFrame:
        return self.fit(data, skills).probas_

    def fit_predict(self, data: pd.DataFrame, skills: pd.Series | None = None) -> pd.Series:
        return self.fit(data, skills).labels_

    # -- internals ------------------------------------------------------------------------------------------
    def _fit_crowd(self, crowd: EncodedCrowd, weights: np.ndarray | None, n_threads: int) -> None:
        C = require_ext(f"{type(self).__name__}.fit")
        # the labels only: the [tasks, classes] shares are written when probas_ is read
        _, codes, undefined = C.aggregate.crowdkit_vote(*crowd.arrays(), weights=weights, shares=False,
                                                        n_threads=n_threads)
        self._set_vote(crowd, weights, codes, undefined)

    def _set_vote(self, crowd: EncodedCrowd, weights: np.ndarray | None, codes: np.ndarray, undefined: int) -> None:
        """The fit's result from the engine's labels (dense class per task, -1 where every share is NaN)."""
        check_task_labels(codes, undefined, type(self).__name__)
        self._crowd, self._weights_used, self._codes = crowd, weights, codes
        self._set_fitted(labels_=labels_series(codes, crowd.tasks, crowd.classes), probas_=Lazy("_build_probas"),
                         skills_=Lazy("_build_skills"))

    def _build_probas(self) -> pd.DataFrame:
        C = require_ext(f"{type(self).__name__}.probas_")
        post, _, _ = C.aggregate.crowdkit_vote(*self._crowd.arrays(), weights=self._weights_used, shares=True,
                                               n_threads=threads(self.n_threads))
        return probas_frame(post, self._crowd.tasks, self._crowd.classes)

    def _build_skills(self) -> pd.Series:
        """crowd-kit's get_accuracy against labels_ (utils.py): per worker, distinct (task, label) answers;
        workers whose every answer "ignore" dropped are not in it."""
        return worker_accuracy(self._crowd, self._codes, self.n_threads)

    def _weights(self, crowd: EncodedCrowd, skills: pd.Series) -> tuple[EncodedCrowd, np.ndarray]:
        """Each worker's vote weight from ``skills`` (crowd-kit's add_skills_to_data), the crowd without the
        answers that on_missing_skill="ignore" drops."""
        if not isinstance(skills, pd.Series):
            raise TypeError(f"skills must be a pandas Series indexed by worker, got {type(skills).__name__}")
        mode, default = self.on_missing_skill, self.default_skill
        if mode != "value" and default is not None:
            raise ValueError('default_skill is used but on_missing_skill is not "value"')
        if mode not in ON_MISSING_SKILL:
            raise ValueError(f"Unknown option {mode!r} of \"on_missing_skill\" argument.")
        if not skills.index.is_unique:  # crowd-kit's join would repeat those workers' answers
            raise ValueError("skills must have one value per worker; its index has duplicates")
        if mode == "value" and default is None:
            raise ValueError('Default skill value must be specified when using on_missing_skill="value"')
        weights = skills.reindex(crowd.workers).to_numpy(np.float64, na_value=np.nan)
        missing = np.isnan(weights)
        if not missing.any():
            return crowd, np.ascontiguousarray(weights)
        per_answer = missing[crowd.worker]
        if mode == "error":
            raise ValueError(f"Skill value is missing in {int(per_answer.sum())} assignments. Specify skills for "
                             "every used worker or use different 'on_missing_skill' value.")
        if mode == "value":
            return crowd, np.ascontiguousarray(np.where(missing, float(default), weights))
        keep = ~per_answer  # "ignore": those answers go; a task left without any is an error
        lost = crowd.n_tasks - np.unique(crowd.task[keep]).size
        if lost:
            raise ValueError(f"{lost} tasks has no workers with known skills. Provide at least one worker with known "
                             "skill for every task or use different 'on_missing_skill' value.")
        kept = EncodedCrowd(crowd.task[keep], crowd.worker[keep], crowd.label[keep], crowd.tasks, crowd.workers,
                            crowd.classes)
        return kept, np.ascontiguousarray(np.where(missing, 0.0, weights))

    def _fit_empty(self, frame: pd.DataFrame, skills: pd.Series | None) -> None:
        """crowd-kit's results on a frame without rows: empty frames and series with the dtypes its pandas
        operations give them (crowd-kit 1.4.2, majority_vote.py and utils.py), from the same operations."""
        if skills is None:
            scores = frame[["task", "label"]].value_counts()
        else:
            joined = frame.join(skills.rename("skill"), on="worker")
            scores = joined.groupby(["task", "label"])["skill"].sum()
        probas = scores.unstack("label", fill_value=0)
        probas = probas.div(probas.sum(axis=1), axis=0)
        self._set_fitted(labels_=empty_labels(), probas_=probas, skills_=empty_skills(frame))


def worker_accuracy(crowd: EncodedCrowd, reference: np.ndarray, n_threads: int | None) -> pd.Series:
    """crowd-kit's get_accuracy(data, reference labels, by="worker") (utils.py): each worker's share of its distinct
    (task, label) answers on tasks with a reference (reference >= 0) that equal it; workers with no such answer are
    left out."""
    C = require_ext("crowd-kit get_accuracy")
    hits, counted = C.aggregate.worker_accuracy(*crowd.arrays(), reference=reference, n_threads=threads(n_threads))
    present = counted > 0
    return worker_series(hits[present] / counted[present], crowd.workers[present])


def empty_skills(frame: pd.DataFrame) -> pd.Series:
    """crowd-kit's get_accuracy of a frame without rows: float64, indexed by the worker column's (empty) values."""
    return pd.Series([], index=pd.Index(frame["worker"], name="worker"), dtype=np.float64, name="skill")


class SkillWeightedVote(FittedAttributes):
    """What crowd-kit's Wawa, GoldMajorityVote and ZeroBasedSkill share: ``fit`` sets ``skills_``; ``predict``
    runs ``MajorityVote().fit(data, self.skills_)`` and takes its ``labels_`` and ``probas_`` (their ``_apply``).
    Subclasses implement ``_fit_skills(frame, crowd)``; the crowd is encoded as the weighted vote lists its
    results (tasks, workers and labels sorted), once per ``fit_predict``. ``fit``, ``fit_predict`` and
    ``fit_predict_proba`` take ``data`` alone, as Wawa's and ZeroBasedSkill's do (GoldMajorityVote's take
    ``true_labels`` too)."""

    n_threads: int | None

    def fit(self, data: pd.DataFrame) -> Any:
        return self._fit(data)

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:
        self._fit_predict(data)
        return self.labels_

    def fit_predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        self._fit_predict(data)
        return self.probas_

    def predict(self, data: pd.DataFrame) -> pd.Series:
        frame = select_columns(data)
        self._apply(frame, self._encode(frame))
        return self.labels_

    def predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        frame = select_columns(data)
        self._apply(frame, self._encode(frame))
        return self.probas_

    def _fit(self, data: pd.DataFrame, *args: Any) -> Any:
        frame = select_columns(data)
        self._fit_skills(frame, self._encode(frame), *args)
        return self

    def _fit_predict(self, data: pd.DataFrame, *args: Any) -> None:
        frame = select_columns(data)
        crowd = self._encode(frame)
        voted = self._fit_and_vote(frame, crowd, *args) if crowd.task.size else None
        if voted is None:
            self._fit_skills(frame, crowd, *args)
            self._apply(frame, crowd)
            return
        skills, codes, undefined = voted
        self._set_fitted(skills_=skills)
        if codes is None:  # a worker without a skill: MajorityVote's own error, from its own check
            self._apply(frame, crowd)
            return
        vote = MajorityVote(n_threads=self.n_threads)
        weights = skills.reindex(crowd.workers).to_numpy(np.float64)  # as predict's vote weighs the workers
        vote._set_vote(crowd, np.ascontiguousarray(weights), codes, undefined)
        self._vote = vote
        self._set_fitted(labels_=vote.labels_, probas_=Lazy("_vote_probas"))

    def _fit_skills(self, frame: pd.DataFrame, crowd: EncodedCrowd, *args: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    def _fit_and_vote(self, frame: pd.DataFrame, crowd: EncodedCrowd,
                      *args: Any) -> tuple[pd.Series, np.ndarray | None, int] | None:
        """fit, then the vote predict would run, in one engine call over one crowd (``fit_predict``): (skills_,
        dense labels or None when a worker has no skill, tasks labelled -1); None where there is no such call."""
        return None

    @staticmethod
    def _encode(frame: pd.DataFrame) -> EncodedCrowd:
        return encode(frame, tasks="sorted", workers="sorted", labels="sorted")

    def _apply(self, frame: pd.DataFrame, crowd: EncodedCrowd) -> None:
        if "skills_" not in self.__dict__ and "skills_" not in self.__dict__.get("_pending", {}):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet (no skills_): call fit first")
        vote = MajorityVote(n_threads=self.n_threads)
        skills = self.skills_
        crowd, weights = vote._weights(crowd, skills)
        if crowd.task.size == 0:
            vote._fit_empty(frame, skills)
        else:
            vote._fit_crowd(crowd, weights, threads(self.n_threads))
        self._vote = vote
        self._set_fitted(labels_=vote.labels_, probas_=Lazy("_vote_probas"))

    def _vote_probas(self) -> pd.DataFrame:
        return self._vote.probas_

