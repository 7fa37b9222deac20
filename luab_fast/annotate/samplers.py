"""HIT samplers of the efficient-annotation seed (``online_label/sampler/*.py``), vectorised over tasks.

A step hands out ``n_hits_per_step`` HITs; each HIT is ``hit_size`` distinct eligible tasks for one worker.
A task is eligible while risk > threshold (risk = 1 − max posterior) and it has fewer than ``max_per_task``
labels. A worker is valid while its labels + hit_size <= ``max_per_worker``, and gets at most one HIT a step.

``next_step`` does not change the sampler: it tracks the step's own HITs on copies of the counts (so a task
near its cap is not over-assigned within the step, as the seed does), and the loop calls ``update`` with the
labels it actually collected. Differences from the seed, all deliberate:

* Threshold lowering (per HIT, never persistent, as in the seed): the seed lowers by 0.01 until hit_size
  tasks are eligible and loops forever when fewer than hit_size uncapped tasks remain. Here the threshold is
  ``risk_thres − 0.01·k`` for the smallest k giving min(hit_size, uncapped tasks) eligible tasks. Its floor is
  thus just below the lowest uncapped risk (never under −0.01, as risk >= 0), and past it the HIT is
  shortened to the uncapped tasks left.
* RandomSampler draws its workers from the valid ones (the seed ignores the per-worker cap there), and
  ``stop()`` also holds when no worker is valid for either sampler (the seed checks this for greedy only).
"""

from __future__ import annotations

import numpy as np

from .workers import index_array

THRESHOLD_STEP = 0.01  # the seed's decrement when too few tasks are unconfident
MAX_PER_TASK = 3  # the seed's caps: labels per image, and images per worker
MAX_PER_WORKER = 2000


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _floats(value, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(value).__name__}") from None


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


class Sampler:
    """Shared state: ``task_counts`` int64 [N], ``worker_counts`` int64 [W], ``risk`` float64 [N]."""

    def __init__(self, n_tasks: int, n_workers: int, *, hit_size: int = 40, n_hits_per_step: int = 50,
                 risk_thres: float = 0.1, max_per_task: int = MAX_PER_TASK,
                 max_per_worker: int = MAX_PER_WORKER) -> None:
        self.n_tasks = _positive_int("n_tasks", n_tasks)
        self.n_workers = _positive_int("n_workers", n_workers)
        self.hit_size = _positive_int("hit_size", hit_size)
        self.n_hits_per_step = _positive_int("n_hits_per_step", n_hits_per_step)
        self.max_per_task = _positive_int("max_per_task", max_per_task)
        self.max_per_worker = _positive_int("max_per_worker", max_per_worker)
        self.risk_thres = _probability("risk_thres", risk_thres)
        if self.n_hits_per_step > self.n_workers:  # the seed asserts this: one HIT per worker per step
            raise ValueError(f"n_hits_per_step={n_hits_per_step} exceeds n_workers={n_workers}: a worker gets "
                             "at most one HIT per step")
        if self.max_per_worker < self.hit_size:
            raise ValueError(f"max_per_worker={max_per_worker} is below hit_size={hit_size}: no worker could "
                             "ever take a HIT")
        self.task_counts = np.zeros(self.n_tasks, np.int64)
        self.worker_counts = np.zeros(self.n_workers, np.int64)
        self.risk = np.ones(self.n_tasks)  # no labels yet: every task unconfident
        self.last_threshold = self.risk_thres  # lowest threshold used by the last next_step (for logs/tests)

    def set_risk(self, risk) -> None:
        """Per-task risk, float [N] in [0, 1] (1 − max posterior)."""
        try:
            r = np.asarray(risk, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"risk must be numbers [{self.n_tasks}], got {type(risk).__name__}") from None
        if r.shape != (self.n_tasks,):
            raise ValueError(f"risk must have shape ({self.n_tasks},), got {r.shape}")
        if not np.isfinite(r).all() or (r < 0).any() or (r > 1).any():
            raise ValueError("risk must be finite and in [0, 1]")
        self.risk = r.copy()

    def update(self, tasks, workers) -> None:
        """Records collected labels: tasks [n], workers [n] int arrays (one entry per label)."""
        t = index_array(tasks, "tasks", self.n_tasks)
        w = index_array(workers, "workers", self.n_workers)
        if t.size != w.size:
            raise ValueError(f"tasks and workers must have the same length, got {t.size} and {w.size}")
        self.task_counts += np.bincount(t, minlength=self.n_tasks)
        self.worker_counts += np.bincount(w, minlength=self.n_workers)

    def valid_workers(self) -> np.ndarray:
        """bool [W]: workers that can take one more full HIT under ``max_per_worker``."""
        return self.worker_counts + self.hit_size <= self.max_per_worker

    def eligible(self, task_counts: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(bool [N] eligible tasks, threshold used), lowering the threshold as described in the module doc."""
        counts = self.task_counts if task_counts is None else task_counts
        open_ = counts < self.max_per_task
        n_open = int(open_.sum())
        need = min(self.hit_size, n_open)
        thres = self.risk_thres
        if need > 0:
            # the need-th largest open risk r: the smallest k with risk_thres − 0.01·k < r makes >= need eligible
            r = np.partition(self.risk[open_], n_open - need)[n_open - need]
            k = 0 if thres < r else int(np.floor((thres - r) / THRESHOLD_STEP)) + 1
            while k > 0 and self.risk_thres - THRESHOLD_STEP * (k - 1) < r:  # float rounding of the floor
                k -= 1
            while not self.risk_thres - THRESHOLD_STEP * k < r:
                k += 1
            thres = self.risk_thres - THRESHOLD_STEP * k
        return open_ & (self.risk > thres), thres

    def stop(self) -> bool:
        """True when every task is confident (risk < risk_thres) or capped, or no worker can take a HIT."""
        done = (self.risk < self.risk_thres) | (self.task_counts >= self.max_per_task)
        return bool(done.all()) or not self.valid_workers().any()

    def next_step(self, rng: np.random.Generator, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """One step's HITs: (tasks int64 [n], workers int64 [n]), HIT after HIT, hit_size rows each (the last
        HITs shorter or missing once tasks or valid workers run out). Does not record them; see ``update``."""
        _check_rng(rng)
        scorer = self._prepare(**kwargs)
        counts = self.task_counts.copy()
        valid = self.valid_workers()
        tasks, workers = [], []
        self.last_threshold = self.risk_thres
        for _ in range(self.n_hits_per_step):  # a loop over HITs (<= n_hits_per_step); tasks are vectorised
            mask, thres = self.eligible(counts)
            pool = np.flatnonzero(mask)
            if pool.size == 0 or not valid.any():
                break
            self.last_threshold = min(self.last_threshold, thres)
            hit = rng.choice(pool, size=min(self.hit_size, pool.size), replace=False)
            w = self._pick_worker(rng, hit, valid, scorer)
            valid[w] = False
            counts[hit] += 1
            tasks.append(hit)
            workers.append(np.full(hit.size, w, np.int64))
        if not tasks:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(tasks).astype(np.int64), np.concatenate(workers)

    def _prepare(self, **kwargs):
        if kwargs:
            raise ValueError(f"{type(self).__name__}.next_step takes no {sorted(kwargs)}")
        return None

    def _pick_worker(self, rng: np.random.Generator, hit: np.ndarray, valid: np.ndarray, scorer) -> int:
        raise NotImplementedError


class RandomSampler(Sampler):
    """The seed's RandomSampler: each HIT goes to a uniformly random valid worker (no repeats in a step)."""

    def _pick_worker(self, rng, hit, valid, scorer) -> int:
        return int(rng.choice(np.flatnonzero(valid)))


class GreedySampler(Sampler):
    """The seed's GreedyTaskAssignmentSampler, plus optional exploration.

    For each HIT (the seed's "40 candidate images" are the HIT itself: hit_size = 40 in every config) it
    picks the valid worker maximising mean over the HIT's tasks of Σ_y post(y)·CM_w[y, y], ties broken by
    1e-8 noise as in the seed. With probability ``exploration`` it takes a uniformly random valid worker
    instead: the pure greedy rule keeps handing HITs to the workers whose prior-plus-counts look best and
    starves the rest, so their matrices are never learnt (the seed's Fig. 10).
    """

    def __init__(self, n_tasks: int, n_workers: int, *, exploration: float = 0.0, **kwargs) -> None:
        super().__init__(n_tasks, n_workers, **kwargs)
        self.exploration = _probability("exploration", exploration)

    def next_step(self, rng: np.random.Generator, posterior=None, worker_cms=None) -> tuple[np.ndarray, np.ndarray]:
        """``posterior`` float [N, K]; ``worker_cms`` each worker's current (prior + counts) matrix [W, K, K]
        (rows are normalised here, so raw pseudo-counts are fine) or its normalised diagonals [W, K]."""
        return super().next_step(rng, posterior=posterior, worker_cms=worker_cms)

    def _prepare(self, posterior=None, worker_cms=None) -> tuple[np.ndarray, np.ndarray]:
        if posterior is None or worker_cms is None:
            raise ValueError("GreedySampler.next_step needs posterior [N, K] and worker_cms [W, K, K] or [W, K]")
        post = _floats(posterior, "posterior")
        if post.ndim != 2 or post.shape[0] != self.n_tasks:
            raise ValueError(f"posterior must be [{self.n_tasks}, K], got shape {post.shape}")
        K = post.shape[1]
        cms = _floats(worker_cms, "worker_cms")
        if cms.shape == (self.n_workers, K, K):
            rows = cms.sum(-1)
            if (rows <= 0).any():
                raise ValueError("worker_cms rows must have a positive sum")
            diag = np.diagonal(cms, axis1=1, axis2=2) / rows  # [W, K] normalised diagonals
        elif cms.shape == (self.n_workers, K):
            diag = cms
        else:
            raise ValueError(f"worker_cms must be [{self.n_workers}, {K}, {K}] or [{self.n_workers}, {K}], "
                             f"got shape {cms.shape}")
        if not (np.isfinite(post).all() and np.isfinite(diag).all()):
            raise ValueError("posterior and worker_cms must be finite")
        return post, diag

    def _pick_worker(self, rng, hit, valid, scorer) -> int:
        post, diag = scorer
        candidates = np.flatnonzero(valid)
        if self.exploration > 0 and rng.random() < self.exploration:
            return int(rng.choice(candidates))
        # mean_i Σ_y post_i(y)·diag_w(y) = diag_w · mean_i post_i: one [K] mean, one [W', K] @ [K] product
        score = diag[candidates] @ post[hit].mean(0) + rng.random(candidates.size) * 1e-8
        return int(candidates[np.argmax(score)])
