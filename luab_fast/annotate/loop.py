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

Learner start (``learner_start``): ``"cold"`` (default) is the seed: a fresh MLP each step, up to
``max_epochs``; ``"warm"`` starts each step's MLP from the last step's (``LearnerConfig.warm_epochs`` epochs,
the last model kept where none beats its validation loss), which a real project's rounds use by default for speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..aggregate import BayesAggregator
from .learner import LearnerConfig, MLPLearner
from .samplers import GreedySampler
from .workers import ReplayWorkers, index_array


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


def _check_inputs(features, truth, workers, sampler, alpha, budget, seed, learner_risk):
    """Every argument of ``run_method`` against the others, once, before the first step: a mismatch found
    mid-run would surface as an IndexError or a NaN deep in EM or the learner. Returns (alpha, truth) as
    float64 [K, K] and int64 [N]."""
    try:
        a = alpha if isinstance(alpha, np.ndarray) else np.asarray(alpha)
    except (TypeError, ValueError):  # ragged nested lists
        raise ValueError(f"alpha must be a [K, K] array of prior pseudo-counts, got {type(alpha).__name__}") from None
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 2 or a.dtype.kind not in "iuf":
        raise ValueError(f"alpha must be a [K, K] array of prior pseudo-counts with K >= 2, got shape {a.shape} "
                         f"dtype {a.dtype}")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("alpha must hold finite pseudo-counts >= 0")
    K = a.shape[0]
    if isinstance(workers, ReplayWorkers):
        t = index_array(truth, "truth", K)
        if t.size != workers.n_tasks:
            raise ValueError(f"truth must have one class per replayed task ({workers.n_tasks}), got {t.size}")
    elif isinstance(getattr(workers, "n_classes", None), (int, np.integer)) and hasattr(workers, "label"):
        if workers.n_classes != K:
            raise ValueError(f"workers have {workers.n_classes} classes but alpha is [{K}, {K}]")
        t = index_array(truth, "truth", K)
    else:
        raise ValueError(f"workers must be SimulatedWorkers or ReplayWorkers, got {type(workers).__name__}")
    N = t.size
    if N < 1:
        raise ValueError("truth must hold at least one task")
    W, Ws = workers.n_workers, getattr(sampler, "n_workers", None)
    # the sampler's workers must exist among the simulated ones (a subset is fine), the replayed workers among
    # the sampler's (it counts their labels); greedy scores every worker the aggregator knows: the same number
    replay = isinstance(workers, ReplayWorkers)
    fits = Ws is not None and (Ws == W if isinstance(sampler, GreedySampler) else (Ws >= W if replay else Ws <= W))
    if getattr(sampler, "n_tasks", None) != N or not fits:
        raise ValueError(f"sampler must be built for {N} tasks and {W} workers, got "
                         f"{getattr(sampler, 'n_tasks', None)} and {Ws}")
    if features is not None:
        f = np.asarray(features)
        if f.ndim != 2 or f.shape[0] != N or f.shape[1] < 1 or f.dtype.kind not in "biuf":
            raise ValueError(f"features must be real numbers [N={N}, D >= 1], got shape {f.shape} dtype {f.dtype}")
        if not np.isfinite(f).all():
            raise ValueError(f"features must be finite: row {int(np.argmax(~np.isfinite(f).all(1)))} holds NaN or inf")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"budget must be a positive integer (labels), got {budget!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(learner_risk, (int, float, np.number)) or not 0 <= learner_risk <= 1:
        raise ValueError(f"learner_risk must be in [0, 1], got {learner_risk!r}")
    return a, t


def run_method(name: str, features: Optional[np.ndarray], truth: np.ndarray, workers, sampler, alpha: np.ndarray,
               budget: int, seed: int = 0, learner_config: Optional[LearnerConfig] = None,
               learner_risk: float = 0.1, early_stop: bool = False, check_prev_n: Optional[int] = None,
               em_start: str = "warm", prototype_idx: Optional[np.ndarray] = None, learner_start: str = "cold",
               on_step: Optional[Callable[[StepRecord], None]] = None) -> dict[str, Any]:
    """Runs one method to its end; returns ``curve`` (list of StepRecord) and the final ``posteriors`` [N, K].

    ``workers``: ``SimulatedWorkers`` (labels drawn from their confusion rows given ``truth``) or
    ``ReplayWorkers`` (a real collection: each chosen task gets its next collected label and worker; the
    sampler's worker choice is then ignored; ``truth`` is indexed by its dense ids, ``workers.task_ids``).
    ``early_stop``: stop once at least N/2 labels are in and the done set has not grown past its maximum for
    ``check_prev_n`` steps (default: the seed's max(5000 // labels per step, 5)).
    ``prototype_idx``: the clean validation images (task indices; their labels are ``truth``'s); None draws the
    seed's 10 per class from ``rng`` first, as the seed does. A real project passes its gold set here
    (``project.py``), and so must a simulation it is compared with."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    for arg, v in (("em_start", em_start), ("learner_start", learner_start)):
        if v not in ("warm", "cold"):
            raise ValueError(f"{arg} must be 'warm' or 'cold', got {v!r}")
    method = METHODS[name]
    if method.learner and features is None:
        raise ValueError(f"method {name!r} needs features (its learner is an MLP on them)")
    alpha, truth = _check_inputs(features, truth, workers, sampler, alpha, budget, seed, learner_risk)
    rng = np.random.default_rng(seed)
    N, K = len(truth), alpha.shape[0]
    W = workers.n_workers
    proto = prototypes(truth, K, 10, rng) if prototype_idx is None else index_array(prototype_idx,
                                                                                   "prototype_idx", N)
    agg = BayesAggregator(prior=alpha, criterion=method.criterion, max_iter=10)
    cfg = learner_config or LearnerConfig()
    cfg = LearnerConfig(**{**vars(cfg), "calibrate": method.calibrate})
    tasks = np.zeros(0, np.int64)
    who = np.zeros(0, np.int64)
    labels = np.zeros(0, np.int64)
    learner_prob, learner_weights = None, None
    post = np.full((N, K), 1.0 / K)
    curve: list[StepRecord] = []
    best_done, since_best = -1, 0
    if check_prev_n is None:  # the seed's EarlyStopper: about 5,000 labels' worth of steps, at least 5
        check_prev_n = max(5000 // max(1, sampler.hit_size * sampler.n_hits_per_step), 5)
    elif not isinstance(check_prev_n, (int, np.integer)) or check_prev_n < 1:
        raise ValueError(f"check_prev_n must be a positive integer or None, got {check_prev_n!r}")
    step = 0
    while len(labels) < budget and not sampler.stop():
        t_new, w_new = sample_step(sampler, agg, post, alpha, rng)
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
        post, learner_prob, em_seconds, learner_weights = refit_step(
            method, agg, features, (tasks, who, labels), (t_new, w_new, z), learner_prob, (proto, truth[proto]),
            rng, seed + step, cfg, learner_risk, em_start, (N, W, K),
            learner_init=learner_weights if learner_start == "warm" else None)
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


def sample_step(sampler, agg: BayesAggregator, post: np.ndarray, alpha: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The first half of a step: the sampler's HITs (tasks, workers), not yet recorded (``sampler.update``)."""
    if isinstance(sampler, GreedySampler):  # expected accuracy needs the current worker estimates
        W, K = sampler.n_workers, alpha.shape[0]
        cms = agg.confusion_ if agg.posteriors_ is not None else np.broadcast_to(alpha, (W, K, K))
        return sampler.next_step(rng, posterior=post, worker_cms=cms)
    return sampler.next_step(rng)


def refit_step(method: Method, agg: BayesAggregator, features: Optional[np.ndarray], data: tuple, new: tuple,
               learner_prob: Optional[np.ndarray], val: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
               learner_seed: int, cfg: LearnerConfig, learner_risk: float, em_start: str,
               sizes: tuple[int, int, int], learner_init: Optional[list[dict]] = None
               ) -> tuple[np.ndarray, Optional[np.ndarray], float, Optional[list[dict]]]:
    """The second half of a step, once its labels are in: EM with the previous learner's probabilities, the
    learner refit on the posteriors, EM again with its new probabilities. Shared by ``run_method`` and a real
    project's rounds (``project.py``), so both run the same arithmetic and draw the same random numbers.
    ``data``: every label so far (task, worker, label); ``new``: this step's; ``val``: (prototype indices, their
    labels); ``sizes``: (N tasks, W workers, K classes); ``learner_init``: the last learner's weights to warm-start
    from (None: a fresh MLP). Returns (posteriors, learner probabilities, EM seconds, the learner's weights: the
    ones given where no learner was fitted)."""
    import time

    N, W, K = sizes
    tasks = data[0]
    proto, proto_labels = val
    t0 = time.perf_counter()
    if em_start == "warm" and agg.posteriors_ is not None:
        agg.partial_fit(new, learner_prob=learner_prob)
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
            val_idx, val_labels = proto, proto_labels
        else:  # Lean: a random labelled subset of the prototypes' size, labelled by the posterior
            val_idx = rng.choice(labelled, size=min(len(proto), len(labelled)), replace=False)
            val_labels = post[val_idx].argmax(1)
        if len(train) >= K:
            learner = MLPLearner(K, cfg, seed=learner_seed).fit(features, post, train, val_idx, val_labels,
                                                               init=learner_init)
            learner_prob, learner_init = learner.predict_proba(features), learner.weights()
            t0 = time.perf_counter()
            if em_start == "warm":
                agg.refit(learner_prob=learner_prob)
            else:
                agg.fit(data, n_classes=K, n_tasks=N, n_workers=W, learner_prob=learner_prob)
            em_seconds += time.perf_counter() - t0
            post = agg.posteriors_
    return post, learner_prob, em_seconds, learner_init
