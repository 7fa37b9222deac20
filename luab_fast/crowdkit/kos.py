"""KOS (Karger, Oh & Shah: "Iterative Learning for Reliable Crowdsourcing Systems", NeurIPS 2011) with crowd-kit
1.4.2's API and results; the message passing runs in C++ (csrc/aggregate/kos.cpp).

crowd-kit's fit is reproduced step for step: ``np.random.seed(random_state)``, the two labels mapped to +1 / −1
in order of first appearance, one starting reliability per answer from ``np.random.normal(1, 1, len(data))``
(drawn here with that very call, so the global numpy state moves as crowd-kit moves it), then ``n_iter`` rounds
of task and worker messages, each sum taken as pandas takes it (Kahan, in row order), stopping when some sum
exceeds 1e300; ``labels_`` is the sign of each task's final sum. Same inputs, same labels, bit for bit.

Edge cases as crowd-kit: empty data gives an empty ``labels_``; a missing column raises (here
``MissingColumnsError``, also crowd-kit's AttributeError / KeyError); other than two distinct labels raises
ValueError; a task whose final sum is exactly 0 (every worker on it answered only that task, e.g. a single
worker) has no label: crowd-kit raises KeyError there (here ``KOSZeroScoreError``, also a KeyError).
Deliberately different: NaN or None in a column raise ValueError (crowd-kit's result depends on where they are),
and the worker column is required even with ``n_iter=0`` (crowd-kit reads it only inside the loop).
"""

from __future__ import annotations

import operator

import numpy as np
import pandas as pd

from .._ext import require_ext
from ..aggregate import _checks
from ._frame import KOSZeroScoreError, MissingColumnsError, empty_labels, factorize, labels_series, missing_columns

__all__ = ["KOS", "KOSZeroScoreError", "MissingColumnsError"]

#: crowd-kit 1.4.2, kos.py (_MAX): a message sum beyond this stops the iteration before it overflows to NaN
_MAX = float(np.float_power(10, 300))


class KOS:
    """crowd-kit's ``KOS(n_iter=100, random_state=0)``: binary labels only. Fitted: ``labels_`` (Series
    ``agg_label`` indexed by ``task``, sorted). ``n_threads`` (keyword only): None for all cores; results do not
    depend on it."""

    def __init__(self, n_iter: int = 100, random_state: int = 0, *, n_threads: int | None = None) -> None:
        self.n_iter = n_iter
        self.random_state = random_state
        self.n_threads = n_threads

    def __repr__(self) -> str:
        return f"KOS(n_iter={self.n_iter!r}, random_state={self.random_state!r})"

    def fit(self, data: pd.DataFrame) -> "KOS":
        """Fits on ``data`` (a DataFrame with columns ``task``, ``worker``, ``label``; two distinct labels)."""
        threads = _checks.n_threads(self.n_threads)
        n_iter = max(operator.index(self.n_iter), 0)  # crowd-kit's range(n_iter): no float, negative runs none
        np.random.seed(self.random_state)
        if not data.size:
            self.labels_ = empty_labels()
            return self
        if "label" not in data.columns:
            raise MissingColumnsError("KOS.fit: data has no 'label' column (crowd-kit: AttributeError); expected "
                                      f"columns task, worker, label, got {list(data.columns)}")
        classes = data["label"].unique()
        if len(classes) != 2:
            raise ValueError("KOS aggregation method is for binary classification only "
                             f"(got {len(classes)} distinct labels)")
        label, _ = factorize(data["label"], "first", "label", "KOS.fit")  # 0 = classes[0] votes +1, 1 = −1
        reliability = np.random.normal(loc=1, scale=1, size=len(data))
        if isinstance(data["label"].dtype, pd.CategoricalDtype):
            raise TypeError("KOS.fit: categorical labels are not supported (crowd-kit: Object with dtype category "
                            "cannot perform the numpy op multiply); pass label.astype(object)")
        missing = missing_columns(data, ("task", "worker"))
        if missing:
            raise MissingColumnsError(f"KOS.fit: data has no {missing} column (crowd-kit: KeyError); expected "
                                      f"columns task, worker, label, got {list(data.columns)}")
        # sorted codes are groupby's group ids: pandas sums a grouping pairwise when they never decrease down the rows
        task, tasks = factorize(data["task"], "sorted", "task", "KOS.fit")
        worker, workers = factorize(data["worker"], "sorted", "worker", "KOS.fit")
        in_runs = [bool(np.all(codes[1:] >= codes[:-1])) for codes in (task, worker)]

        C = require_ext("KOS.fit")
        out = C.aggregate.kos(task, worker, label, len(tasks), len(workers), reliability, n_iter, _MAX, *in_runs,
                              threads)
        self._task_score = out["task_score"]  # each task's final sum: its sign is the label, |sum| the margin
        sign = np.sign(self._task_score)
        unlabelled = np.flatnonzero((sign != 1.0) & (sign != -1.0))
        if unlabelled.size:
            first = unlabelled[0]
            raise KOSZeroScoreError(
                f"KOS.fit: task {tasks[first]!r} (and {unlabelled.size - 1} more) has a final score of "
                f"{out['task_score'][first]!r}, which maps to neither label: every worker on it answered only that "
                "task (or only one worker answered at all). crowd-kit 1.4.2 raises KeyError here too.")
        self.labels_ = labels_series(np.where(sign > 0, 0, 1), tasks, classes)
        return self

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:
        """Fits on ``data`` and returns ``labels_``."""
        return self.fit(data).labels_
