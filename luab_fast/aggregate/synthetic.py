"""Synthetic crowds, the protocol of ../shared/docs/aggregation.md's timings (and the default demo data):
truth uniform over K classes; each worker has a one-coin accuracy ~ U(acc_low, acc_high); a wrong
answer is uniform over the other classes; each task gets ``labels_per_task`` distinct random workers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class SyntheticCrowd:
    task: np.ndarray  # int64 [N]
    worker: np.ndarray  # int64 [N]
    label: np.ndarray  # int64 [N]
    truth: np.ndarray  # int64 [T]
    accuracy: np.ndarray  # float64 [W], each worker's true one-coin accuracy
    n_classes: int

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.task, self.worker, self.label

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"task": self.task, "worker": self.worker, "label": self.label})


def make_crowd(n_tasks: int, n_workers: int, labels_per_task: int, n_classes: int, seed: int = 0,
               acc_low: float = 0.5, acc_high: float = 0.95) -> SyntheticCrowd:
    if labels_per_task > n_workers:
        raise ValueError(f"labels_per_task must be <= n_workers={n_workers}, got {labels_per_task}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_tasks)
    accuracy = rng.uniform(acc_low, acc_high, n_workers)
    # distinct workers per task: the first labels_per_task of a random permutation, drawn in chunks
    # (argsort of uniform keys) so memory stays O(chunk × n_workers)
    workers = np.empty((n_tasks, labels_per_task), np.int64)
    chunk = max(1, 2_000_000 // n_workers)
    for lo in range(0, n_tasks, chunk):
        hi = min(n_tasks, lo + chunk)
        keys = rng.random((hi - lo, n_workers))
        workers[lo:hi] = np.argpartition(keys, labels_per_task - 1, axis=1)[:, :labels_per_task]
    task = np.repeat(np.arange(n_tasks, dtype=np.int64), labels_per_task)
    worker = workers.reshape(-1)
    true = truth[task]
    correct = rng.random(task.size) < accuracy[worker]
    wrong = (true + rng.integers(1, n_classes, task.size)) % n_classes
    label = np.where(correct, true, wrong).astype(np.int64)
    return SyntheticCrowd(task=task, worker=worker, label=label, truth=truth.astype(np.int64),
                          accuracy=accuracy, n_classes=n_classes)
