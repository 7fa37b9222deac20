"""crowd-kit's ``Wawa`` (crowd-kit 1.4.2, aggregation/classification/wawa.py): Worker Agreement With Aggregate.

crowd-kit 1.4.2's Wawa fails at ``predict`` under scikit-learn >= 1.6 (its ``check_is_fitted`` raises about
``__sklearn_tags__``); this class follows its code as written: the majority vote, each worker's accuracy against it,
then the vote weighted by those accuracies.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._ext import require_ext
from ._frame import EncodedCrowd, first_appearance_order, threads, worker_series
from .majority_vote import SkillWeightedVote, empty_skills, worker_accuracy


class Wawa(SkillWeightedVote):
    """Majority vote weighted by each worker's agreement with the plain majority vote.

    Keyword-only (luab_fast): ``n_threads``, None for OpenMP's default; results do not depend on it.
    Fitted: ``skills_`` (Series "skill" by worker, sorted) by ``fit``; ``labels_`` and ``probas_`` by ``predict``,
    ``predict_proba``, ``fit_predict`` and ``fit_predict_proba`` (those of the skill-weighted MajorityVote).
    """

    def __init__(self, *, n_threads: int | None = None) -> None:
        self.n_threads = n_threads

    def _fit_and_vote(self, frame: pd.DataFrame, crowd: EncodedCrowd) -> tuple[pd.Series, np.ndarray | None, int]:
        C = require_ext("Wawa.fit_predict")
        hits, counted, codes, undefined = C.aggregate.skill_weighted_vote(
            *crowd.arrays(), order=first_appearance_order(frame, crowd.classes), n_threads=threads(self.n_threads))
        return worker_series(hits / counted, crowd.workers), codes, undefined

    def _fit_skills(self, frame: pd.DataFrame, crowd: EncodedCrowd) -> None:
        if crowd.task.size == 0:
            self._set_fitted(skills_=empty_skills(frame))
            return
        # the plain vote's labels: ties go to the class seen first, its column order (value_counts().unstack())
        order = first_appearance_order(frame, crowd.classes)
        C = require_ext("Wawa.fit")
        _, codes, _ = C.aggregate.crowdkit_vote(*crowd.arrays(), order=order, shares=False,
                                                n_threads=threads(self.n_threads))
        self._set_fitted(skills_=worker_accuracy(crowd, codes, self.n_threads))
