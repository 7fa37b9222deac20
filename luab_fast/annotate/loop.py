"""The online labelling loop of "Towards Good Practices for Efficiently Annotating Large-Scale Image
Classification Datasets" (Liao, Kar, Fidler, CVPR 2021; ../shared/docs/aggregation.md §A), on the C++ EM engine.

Each step: the sampler hands HITs to workers, they label, EM (``BayesAggregator``, the seed's hard-EM with a
Dirichlet worker prior) refits with the learner's probabilities as a per-task prior, the learner refits on
the new posteriors, EM re-infers with the new learner probabilities, risk = 1 − max posterior; tasks with
risk below the threshold are done. Stops when every task is done or capped, at the label budget, or (with
``early_stop``) when the done set has not grown past its maximum for ``check_prev_n`` steps.

EM start (``em_start``): ``"warm"`` (default) refits each step with ``partial_fit`` from the previous
posteriors, and the post-learner EM with ``refit``; ``"cold"`` is the seed exactly: counts reset to the prior and
EM over all labels from scratch, twice a step. Warm needs fewer EM iterations (benchmarks/bench_annotate.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..aggregate import BayesAggregator
from .learner import LearnerConfig, MLPLearner
from .samplers import GreedySampler
from .workers import ReplayWorkers


@dataclass(frozen=True)
class Method:
    criterion: str  # EM stopping: "soft" (z-likelihood) or "hard" (argmaxes)
    learner: bool
    calibrate: str = "temperature"
    pseudolabel: bool = False  # train the learner on confident tasks (risk < learner_risk) too
    val: str = "prototypes"  # or "random": a random labelled subset of the same size


METHODS = {  # ../shared/docs/aggregation.md §A, "The four methods"
    "ds_model": Method("soft", learner=False),
    "lean": Method("hard", learner=True, calibrate="cv_3", val="random"),
    "improved_lean": Method("soft", learner=True),
    "efficient_annotation": Method("soft", learner=True, pseudolabel=True),
}


@dataclass
class StepRecord:
    method: str
    step: int
    labels: int
    labels_per_image: float
    accuracy: float
    done_fraction: float
    seconds_em: float


def prototypes(truth: np.ndarray, n_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` clean images of each class (the seed's validation set): indices into the tasks."""
    out = [rng.choice(np.flatnonzero(truth == k), size=min(per_class, int((truth == k).sum())), replace=False)
           for k in range(n_classes)]
    return np.concatenate(out).astype(np.int64)


def run_method(name: str, features: Optional[np.ndarray], truth: np.ndarray, workers, sampler, alpha: np.ndarray,
               budget: int, seed: int = 0, learner_config: Optional[LearnerConfig] = None,
               learner_risk: float = 0.1, early_stop: bool = False, check_prev_n: Optional[int] = None,
               em_start: str = "warm",
               on_step: Optional[Callable[[StepRecord], None]] = None) -> dict[str, Any]:
    """Runs one method to its end; returns ``curve`` (list of StepRecord) and the final ``posteriors`` [N, K].

    ``workers``: ``SimulatedWorkers`` (labels drawn from their confusion rows given ``truth``) or
    ``ReplayWorkers`` (a real collection: each chosen task gets its next collected label and worker; the
    sampler's worker choice is then ignored; ``truth`` is indexed by its dense ids, ``workers.task_ids``).
    ``early_stop``: stop once at least N/2 labels are in and the done set has not grown past its maximum for
    ``check_prev_n`` steps (default: the seed's max(5000 // labels per step, 5))."""
    import time

    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    if em_start not in ("warm", "cold"):
        raise ValueError(f"em_start must be 'warm' or 'cold', got {em_start!r}")
    method = METHODS[name]
    if method.learner and features is None:
        raise ValueError(f"method {name!r} needs features (its learner is an MLP on them)")
    rng = np.random.default_rng(seed)
    N, K = len(truth), alpha.shape[0]
    W = workers.n_workers
    proto = prototypes(truth, K, 10, rng)
    agg = BayesAggregator(prior=alpha, criterion=method.criterion, max_iter=10)
    cfg = learner_config or LearnerConfig()
    cfg = LearnerConfig(**{**vars(cfg), "calibrate": method.calibrate})
    tasks = np.zeros(0, np.int64)
    who = np.zeros(0, np.int64)
    labels = np.zeros(0, np.int64)
    learner_prob = None
    post = np.full((N, K), 1.0 / K)
    curve: list[StepRecord] = []
    best_done, since_best = -1, 0
    if check_prev_n is None:  # the seed's EarlyStopper: about 5,000 labels' worth of steps, at least 5
        check_prev_n = max(5000 // max(1, sampler.hit_size * sampler.n_hits_per_step), 5)
    elif not isinstance(check_prev_n, (int, np.integer)) or check_prev_n < 1:
        raise ValueError(f"check_prev_n must be a positive integer or None, got {check_prev_n!r}")
    step = 0
    while len(labels) < budget and not sampler.stop():
        if isinstance(sampler, GreedySampler):  # expected accuracy needs the current worker estimates
            cms = agg.confusion_ if agg.posteriors_ is not None else np.broadcast_to(alpha, (W, K, K))
            t_new, w_new = sampler.next_step(rng, posterior=post, worker_cms=cms)
        else:
            t_new, w_new = sampler.next_step(rng)
        if len(t_new) == 0:
            break
        if isinstance(workers, ReplayWorkers):  # real labels: the chosen tasks' next collected labels
            t_new, w_new, z = workers.take(t_new)
            if len(t_new) == 0:
                break
        else:
            z = workers.label(t_new, w_new, truth, rng)
        sampler.update(t_new, w_new)
        tasks, who, labels = np.concatenate([tasks, t_new]), np.concatenate([who, w_new]), np.concatenate([labels, z])
        data = (tasks, who, labels)
        t0 = time.perf_counter()
        if em_start == "warm" and agg.posteriors_ is not None:
            agg.partial_fit((t_new, w_new, z), learner_prob=learner_prob)
        else:
            agg.fit(data, n_classes=K, n_tasks=N, n_workers=W, learner_prob=learner_prob)
        em_seconds = time.perf_counter() - t0
        post = agg.posteriors_
        if method.learner:
            risk = 1.0 - post.max(1)
            labelled = np.unique(tasks)
            train = np.union1d(labelled, np.flatnonzero(risk < learner_risk)) if method.pseudolabel else labelled
            train = np.setdiff1d(train, proto) if method.val == "prototypes" else train
            if method.val == "prototypes":
                val_idx, val_labels = proto, truth[proto]
            else:  # Lean: a random labelled subset of the prototypes' size, labelled by the posterior
                val_idx = rng.choice(labelled, size=min(len(proto), len(labelled)), replace=False)
                val_labels = post[val_idx].argmax(1)
            if len(train) >= K:
                learner = MLPLearner(K, cfg, seed=seed + step).fit(features, post, train, val_idx, val_labels)
                learner_prob = learner.predict_proba(features)
                t0 = time.perf_counter()
                if em_start == "warm":
                    agg.refit(learner_prob=learner_prob)
                else:
                    agg.fit(data, n_classes=K, n_tasks=N, n_workers=W, learner_prob=learner_prob)
                em_seconds += time.perf_counter() - t0
                post = agg.posteriors_
        risk = 1.0 - post.max(1)
        sampler.set_risk(risk)
        done = float((risk < sampler.risk_thres).mean())
        step += 1
        rec = StepRecord(name, step, len(labels), len(labels) / N, float((post.argmax(1) == truth).mean()), done,
                         em_seconds)
        curve.append(rec)
        if on_step:
            on_step(rec)
        n_done = int((risk < sampler.risk_thres).sum())
        if n_done > best_done:
            best_done, since_best = n_done, 0
        else:
            since_best += 1
        if early_stop and step >= check_prev_n and len(labels) >= N / 2 and since_best >= check_prev_n:
            break
    return {"curve": curve, "posteriors": post, "labels": (tasks, who, labels)}
