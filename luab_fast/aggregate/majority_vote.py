"""Majority vote, optionally weighted by per-worker skills (crowd-kit's ``MajorityVote``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import _checks
from ._input import Encoded
from .base import BaseAggregator


class MajorityVote(BaseAggregator):
    """Normalised (weighted) vote shares per task.

    Ties: ``labels_`` takes the first class in ``classes_`` order (the smallest label when labels are
    sortable); deterministic. crowd-kit's ``MajorityVote`` breaks ties by the column order of
    ``value_counts().unstack()`` instead, so on exact ties its label may differ while the vote shares are
    identical. ``skills`` (a Series indexed by worker, or an array [W] for array input)
    weights each vote; workers missing from it get ``default_skill``, or raise when that is None.
    Fitted: ``probas_``, ``labels_``, ``skills_`` (each worker's accuracy against the majority).
    """

    name = "mv"

    def __init__(self, default_skill: float | None = None, n_threads: int | None = None,
                 on_duplicate: str = "keep") -> None:
        super().__init__(n_threads=n_threads, on_duplicate=on_duplicate)
        self.default_skill = default_skill

    def fit(self, data: Any, skills: pd.Series | np.ndarray | None = None, **kwargs: Any) -> "MajorityVote":
        return super().fit(data, skills=skills, **kwargs)  # type: ignore[return-value]

    def _weights(self, enc: Encoded, skills: pd.Series | np.ndarray | None) -> np.ndarray | None:
        if skills is None:
            return None
        expected = "a number >= 0 per worker (a Series by worker id, or an array [W])"
        if isinstance(skills, pd.Series):
            w = _checks.float_array(skills.reindex(enc.worker_ids), "skills", expected)
        else:
            w = _checks.float_array(skills, "skills", expected)
            if w.shape != (enc.n_workers,):
                raise ValueError(f"skills must have shape ({enc.n_workers},) (one per worker), got {w.shape}")
        missing = np.isnan(w)
        if missing.any():
            if self.default_skill is None:
                names = enc.worker_ids[missing][:5].tolist()
                raise ValueError(f"skills has no value for workers {names}; pass default_skill= to fill them")
            w = np.where(missing, _checks.number(self.default_skill, "default_skill"), w)
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():  # a negative weight gave vote shares outside [0, 1], an infinite one NaN
            names = enc.worker_ids[bad][:5].tolist()
            raise ValueError(f"skills must be finite numbers >= 0, got {w[bad][:5].tolist()} for workers {names}")
        return np.ascontiguousarray(w)

    def _run(self, enc: Encoded, warm: np.ndarray | None, skills: Any = None) -> None:
        self.posteriors_ = self._majority_vote(enc, self._weights(enc, skills))

    @property
    def skills_(self) -> pd.Series:
        """Each worker's share of labels that agree with the aggregated label."""
        enc = self._check_fitted()
        agree = (self.label_array_[enc.task] == enc.label).astype(np.float64)
        acc = np.bincount(enc.worker, agree, enc.n_workers) / np.maximum(np.bincount(enc.worker, None,
                                                                                      enc.n_workers), 1)
        return pd.Series(acc, index=enc.worker_ids, name="skill")
