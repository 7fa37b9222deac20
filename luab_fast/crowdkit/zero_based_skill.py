"""crowd-kit's ``ZeroBasedSkill`` (crowd-kit 1.4.2, aggregation/classification/zero_based_skill.py) on the C++
engine (csrc/aggregate/zero_based_skill.cpp): every iteration's weighted vote and accuracy are crowd-kit's to the
bit, so the skills are.

crowd-kit 1.4.2's ZeroBasedSkill fails at ``predict`` under scikit-learn >= 1.6 (its ``check_is_fitted`` raises
about ``__sklearn_tags__``); this class follows its code as written.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from .._ext import require_ext
from ._frame import EncodedCrowd, threads, worker_series
from .majority_vote import SkillWeightedVote, empty_skills


class ZeroBasedSkill(SkillWeightedVote):
    """Skill-weighted majority vote whose skills move toward each worker's accuracy against it, n_iter times:
    skill += lr · (accuracy − skill), the rate lr starting at ``lr_init`` and multiplied by ``lr_reduce_factor``
    at every ``lr_steps_to_reduce``-th iteration; the skills start at 1 / (number of labels) + ``eps``.

    Keyword-only (luab_fast): ``n_threads``, None for OpenMP's default; results do not depend on it.
    Fitted: ``skills_`` (Series "skill" by worker) by ``fit``; ``labels_`` and ``probas_`` by ``predict``,
    ``predict_proba``, ``fit_predict`` and ``fit_predict_proba``.
    """

    def __init__(self, n_iter: int = 100, lr_init: float = 1.0, lr_steps_to_reduce: int = 20,
                 lr_reduce_factor: float = 0.5, eps: float = 1e-5, *, n_threads: int | None = None) -> None:
        self.n_iter = n_iter
        self.lr_init = lr_init
        self.lr_steps_to_reduce = lr_steps_to_reduce
        self.lr_reduce_factor = lr_reduce_factor
        self.eps = eps
        self.n_threads = n_threads

    def _fit_and_vote(self, frame: pd.DataFrame, crowd: EncodedCrowd) -> tuple[pd.Series, np.ndarray | None, int]:
        skills, codes, undefined = self._run(frame, crowd, predict=True)
        return skills, codes, undefined

    def _fit_skills(self, frame: pd.DataFrame, crowd: EncodedCrowd) -> None:
        self._set_fitted(skills_=self._run(frame, crowd, predict=False)[0])

    def _run(self, frame: pd.DataFrame, crowd: EncodedCrowd,
             predict: bool) -> tuple[pd.Series, np.ndarray | None, int]:
        """(skills_, and with ``predict`` the dense labels of the vote they weight and the tasks it labels -1)."""
        if crowd.n_classes == 0:  # crowd-kit's 1 / data.label.unique().size, before anything else
            if isinstance(frame["label"].dtype, np.dtype):
                raise ZeroDivisionError("division by zero: ZeroBasedSkill starts every skill at 1 / (number of "
                                        "distinct labels) + eps, and data has no rows")
            # an extension-typed column's unique().size is a numpy integer: 1 / 0 is inf there, and the fit
            # goes on over no rows
            return empty_skills(frame), None, 0
        start = np.full(crowd.n_workers, 1 / crowd.n_classes + float(self.eps))
        n_iter, steps = self._schedule()
        if n_iter == 0 and not predict:  # no update: crowd-kit's start, indexed by first appearance
            return worker_series(start, pd.Index(pd.unique(frame["worker"]), name="worker")), None, 0
        C = require_ext("ZeroBasedSkill.fit")
        skills, codes, undefined = C.aggregate.zero_based_skill(
            *crowd.arrays(), skills=start, n_iter=n_iter, lr_init=float(self.lr_init), lr_steps_to_reduce=steps,
            lr_reduce_factor=float(self.lr_reduce_factor), predict=predict, n_threads=threads(self.n_threads))
        if n_iter == 0:  # the start, by first appearance; the vote it weights is the same in any order
            return worker_series(start, pd.Index(pd.unique(frame["worker"]), name="worker")), codes, undefined
        return worker_series(skills, crowd.workers), codes, undefined

    def _schedule(self) -> tuple[int, int]:
        """(iterations, steps between rate cuts) as crowd-kit's loop reads them: range(1, n_iter + 1) (none when
        n_iter < 1) and iteration % lr_steps_to_reduce (a ZeroDivisionError when it is 0)."""
        n_iter, steps = self.n_iter, self.lr_steps_to_reduce
        if not isinstance(n_iter, numbers.Integral) or isinstance(n_iter, bool):
            raise TypeError(f"n_iter must be an integer, got {n_iter!r}")
        if not isinstance(steps, numbers.Real) or isinstance(steps, bool) or steps != int(steps):
            raise ValueError(f"lr_steps_to_reduce must be a whole number, got {steps!r}")
        n_iter = max(int(n_iter), 0)
        if n_iter and steps == 0:
            raise ZeroDivisionError("integer modulo by zero: lr_steps_to_reduce must not be 0")
        return n_iter, int(steps) if steps else 1
