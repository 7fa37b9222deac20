"""Simulated crowd workers for the demo dataset: per-worker confusion matrices whose errors go mostly
to visually similar digits, so Dawid-Skene has structure to find that majority vote ignores.

Each worker ``w`` has an accuracy ``a_w`` (evenly spread over ``mean ± spread`` and shuffled, so the
crowd's mean accuracy is exactly ``mean`` rather than a noisy draw) and a confusion matrix
``C_w[true, given]``: ``a_w`` on the diagonal; of the error mass ``1 − a_w`` a share ``similar_share``
goes to the true digit's look-alikes (``SIMILAR``) and the rest is spread over the other classes with
worker-specific Dirichlet weights (different workers make different mistakes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_CLASSES = 10
# digit -> the digits it is most often mistaken for (handwritten look-alikes)
SIMILAR = {0: (6, 8), 1: (7,), 2: (7, 3), 3: (8, 5), 4: (9,), 5: (6, 3), 6: (5, 0), 7: (1, 2), 8: (3, 0), 9: (4, 7)}


@dataclass
class Crowd:
    """Simulated labels: ``task`` int64 [N] (positions into the truth array), ``worker`` int64 [N],
    ``label`` int64 [N] (class index), ``accuracy`` float64 [W] and ``confusion`` float64 [W, K, K]
    (row = true class, column = given label; rows sum to 1) of the workers that produced them."""

    task: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    accuracy: np.ndarray
    confusion: np.ndarray


def worker_ids(rng: np.random.Generator, n: int, letter_first: bool = False) -> list[str]:
    """``n`` distinct anonymised ids in the release's style (10 upper-case hex digits); ``letter_first``
    makes the first one A-F, so a CSV reader never takes an id such as ``1234567890`` for a number."""
    hexd = list("0123456789ABCDEF")
    out: dict[str, None] = {}
    while len(out) < n:
        out["".join(rng.choice(hexd[10:] if letter_first else hexd, 1)) + "".join(rng.choice(hexd, 9))] = None
    return list(out)


def confusion_matrices(rng: np.random.Generator, accuracy: np.ndarray, similar_share: float = 0.7,
                       n_classes: int = N_CLASSES) -> np.ndarray:
    """float64 [W, K, K] confusion matrices for workers of the given accuracies [W] (see module doc)."""
    w = len(accuracy)
    conf = np.zeros((w, n_classes, n_classes))
    for k in range(n_classes):
        others = np.array([j for j in range(n_classes) if j != k])
        sim = np.isin(others, SIMILAR.get(k, ()))
        noise = rng.dirichlet(np.ones(len(others)), size=w)  # [W, K-1] worker-specific error spread
        near = np.where(sim, 1.0 / max(sim.sum(), 1), 0.0)  # [K-1] look-alikes share equally
        err = similar_share * near + (1.0 - similar_share) * noise if sim.any() else noise
        conf[:, k, others] = (1.0 - accuracy)[:, None] * err
        conf[:, k, k] = accuracy
    return conf


def simulate_crowd(truth: np.ndarray, n_workers: int, labels_per_task: int, seed: int | np.random.SeedSequence,
                   mean_accuracy: float = 0.75, spread: float = 0.2, similar_share: float = 0.7) -> Crowd:
    """Labels for tasks with true classes ``truth`` int [T]: each task gets ``labels_per_task`` distinct
    workers, the least-loaded ones first, so every worker labels about the same number of tasks.

    Raises ValueError naming the argument when the crowd cannot be built.
    """
    truth = np.asarray(truth, np.int64)
    if not 0.0 < mean_accuracy <= 1.0:
        raise ValueError(f"mean_accuracy must be in (0, 1], got {mean_accuracy}")
    if spread < 0 or mean_accuracy - spread < 0 or mean_accuracy + spread > 1:
        raise ValueError(f"spread must keep mean_accuracy ± spread inside [0, 1], got mean_accuracy="
                         f"{mean_accuracy}, spread={spread}")
    if not 1 <= labels_per_task <= n_workers:
        raise ValueError(f"labels_per_task must be in [1, n_workers={n_workers}], got {labels_per_task}")
    if not 0.0 <= similar_share <= 1.0:
        raise ValueError(f"similar_share must be in [0, 1], got {similar_share}")
    rng = np.random.default_rng(seed)
    # evenly spaced accuracies: their mean is exactly mean_accuracy, whatever the number of workers
    accuracy = mean_accuracy + spread * (2.0 * (np.arange(n_workers) + 0.5) / n_workers - 1.0)
    accuracy = rng.permutation(accuracy)
    conf = confusion_matrices(rng, accuracy, similar_share)
    t = len(truth)
    # each task takes the labels_per_task least-loaded workers (random tie-break): distinct workers per
    # task, every worker labels T * labels_per_task / W tasks (± 1), and co-labelling pairs vary
    load = np.zeros(n_workers)
    chosen = np.empty((t, labels_per_task), np.int64)
    for i in range(t):
        pick = np.argpartition(load + rng.random(n_workers), labels_per_task - 1)[:labels_per_task]
        chosen[i] = np.sort(pick)
        load[pick] += 1
    task = np.repeat(np.arange(t, dtype=np.int64), labels_per_task)
    worker = chosen.reshape(-1)
    cdf = np.cumsum(conf[worker, truth[task]], axis=1)  # [N, K] per-label answer distribution
    u = rng.random(len(task))[:, None]
    label = np.minimum((u > cdf).sum(1), N_CLASSES - 1).astype(np.int64)
    return Crowd(task=task, worker=worker, label=label, accuracy=accuracy, confusion=conf)
