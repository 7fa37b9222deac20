"""The online labelling loop's EM (issue 8), at the seed's ImageNet-100 scale in full mode.

- ``annotate_em_fit``: one EM fit as the seed runs it each online step (counts reset, ≤ 10 iterations, learner
  probabilities as the per-task prior) — the seed's Python loops (benchmarks/_seed_em.py) beside
  ``BayesAggregator.fit``; checked first: the same posteriors.
- ``annotate_em_refit``: what luab_fast's loop runs instead each step — ``partial_fit`` with the step's new
  labels, warm-started from the previous posteriors — beside the seed's cold fit on the same labels (its
  per-step cost). Target ≤ 0.2 s on the 2-core CI machine. Checked: labels of the labelled tasks agree with the
  cold fit's.
- ``annotate_simulation`` (full mode only, no baseline: the seed's loops would take hours): a whole
  ImageNet-100-sized run of ``efficient_annotation`` (synthetic features, structured-noise AMT workers) to one
  label per image. Target < 10 minutes.
- ``annotate_project_round_<method>`` (no baseline: no public tool runs rounds on real labels): one ``python -m
  luab_fast.annotate next`` round in process — load the project, ingest a step's labels from a CSV, EM (and the
  learner for ``efficient_annotation``), sample the next step, the atomic save with every output — at the refit's
  moment of a run (45,000 labels in, 2,000 new in full mode). Target ≤ 5 s at ImageNet-100 scale, features given.
  Checked: next.csv holds whole HITs of distinct tasks, posteriors.csv a column per class, and (full mode) the
  fastest of the rounds within 5 s. Wall and CPU seconds are both recorded: on a shared 2-core machine the wall
  time also counts the other processes' share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from benchmarks._record import BASELINE, OURS, Plan, Recorder, Size
from benchmarks._seed_em import seed_bayes_em
from luab_fast._ext import HAS_EXT
from luab_fast.aggregate import BayesAggregator
from luab_fast.aggregate.bayes import homogeneous_prior
from luab_fast.annotate.synthetic import IMAGENET100, synthetic_problem
from luab_fast.annotate.workers import SimulatedWorkers, load_amt, pooled_counts, structured_workers

pytestmark = pytest.mark.skipif(not HAS_EXT, reason="needs luab_fast._C")


@dataclass(frozen=True)
class Online(Size):
    """A moment of an online run: ``n_labels`` collected on ``n_tasks`` images, the last ``step`` of them new."""

    n_tasks: int
    n_classes: int
    n_workers: int
    n_labels: int
    step: int
    unit: str = "labels"

    @property
    def n_items(self) -> int:
        return self.n_labels

    @property
    def label(self) -> str:
        return (f"{self.n_tasks:,} images × {self.n_classes} classes, {self.n_labels:,} labels "
                f"(+{self.step:,}), {self.n_workers} workers")


# full: the seed's imagenet_100_classes a little over a third of the way to 1 label/image (2,000 labels a step)
FULL = Online(IMAGENET100["n_images"], IMAGENET100["n_classes"], 50, 45_000, 2_000)
QUICK = Online(8_000, 20, 20, 3_000, 400)
REFIT_TARGET = "≤ 0.2 s per refit at ImageNet-100 scale (2-core CPU)"
PLANS = {
    "quick": {"fit": Plan(QUICK, {BASELINE: 1, OURS: 10}, "same posteriors as the seed's loops"),
              "refit": Plan(QUICK, {BASELINE: 1, OURS: 10}, REFIT_TARGET)},
    "full": {"fit": Plan(FULL, {BASELINE: 1, OURS: 5}, "same posteriors as the seed's loops"),
             "refit": Plan(FULL, {BASELINE: 1, OURS: 10}, REFIT_TARGET)},
}
MAX_ABS_DP = 1e-9  # same arithmetic in a different summation order
MIN_REFIT_AGREEMENT = 0.99  # warm and cold hard-EM may settle differently on a few ambiguous tasks


def online_state(size: Online, seed: int = 0) -> dict[str, Any]:
    """Labels from structured-noise AMT workers on random images (≤ the seed's 3 per image), a learner's
    probabilities (right class for 70% of images, confident), and the seed's homogeneous prior."""
    amt = load_amt()
    classes = list(amt.wnids[: size.n_classes])
    workers = SimulatedWorkers(structured_workers(amt, classes, n_workers=size.n_workers, seed=seed))
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, size.n_classes, size.n_tasks)
    slots = rng.permutation(np.repeat(np.arange(size.n_tasks), 3))[: size.n_labels]
    who = rng.integers(0, size.n_workers, size.n_labels)
    z = workers.label(slots, who, truth, rng)
    guess = np.where(rng.random(size.n_tasks) < 0.7, truth, rng.integers(0, size.n_classes, size.n_tasks))
    logits = 3.0 * np.eye(size.n_classes)[guess] + rng.standard_normal((size.n_tasks, size.n_classes))
    learner = np.exp(logits - logits.max(1, keepdims=True))
    learner /= learner.sum(1, keepdims=True)
    alpha = homogeneous_prior(pooled_counts(amt, classes), 10.0)
    return {"labels": (slots.astype(np.int64), who.astype(np.int64), z.astype(np.int64)), "learner": learner,
            "alpha": alpha, "truth": truth}


def _seed_side(bench: Recorder, name: str, plan: Plan, st: dict[str, Any], labels) -> tuple[np.ndarray, int]:
    size = plan.size
    times = []
    for _ in range(plan.rounds[BASELINE]):
        t0 = time.perf_counter()
        post, n_iter = seed_bayes_em(*labels, size.n_tasks, size.n_workers, size.n_classes, st["alpha"],
                                     st["learner"])
        times.append(time.perf_counter() - t0)
    bench.side(name, BASELINE, plan, impl="the seed's EMOptimizer step: Python loops (benchmarks/_seed_em.py)",
               stats={"median_s": float(np.median(times)), "min_s": min(times), "rounds": len(times)},
               n_iter=n_iter)
    return post, n_iter


def _kw(size: Online) -> dict[str, int]:
    return dict(n_classes=size.n_classes, n_tasks=size.n_tasks, n_workers=size.n_workers)


def test_annotate_em_fit(benchmark: Any, bench: Recorder) -> None:
    plan = PLANS[bench.mode]["fit"]
    size: Online = plan.size  # type: ignore[assignment]
    st = online_state(size)
    want, n_iter = _seed_side(bench, "annotate_em_fit", plan, st, st["labels"])
    agg = BayesAggregator(prior=st["alpha"], max_iter=10)
    agg.fit(st["labels"], learner_prob=st["learner"], **_kw(size))
    err = float(np.abs(agg.posteriors_ - want).max())
    ok = err <= MAX_ABS_DP and agg.n_iter_ == n_iter
    bench.check("annotate_em_fit", plan, metric="max |Δ posterior|", value=err, threshold=MAX_ABS_DP, passed=ok,
                detail=f"EM iterations {agg.n_iter_} vs the seed's {n_iter}")
    assert ok, f"posteriors differ by {err:.2e} (iterations {agg.n_iter_} vs {n_iter})"
    benchmark.group = "annotate_em_fit"
    benchmark.pedantic(lambda: agg.fit(st["labels"], learner_prob=st["learner"], **_kw(size)),
                       rounds=plan.rounds[OURS], warmup_rounds=1)
    s = benchmark.stats.stats
    bench.side("annotate_em_fit", OURS, plan, impl="BayesAggregator.fit: C++ EM, counts reset as the seed",
               stats={"median_s": s.median, "min_s": s.min, "max_s": s.max, "rounds": s.rounds}, n_iter=agg.n_iter_)


def test_annotate_em_refit(benchmark: Any, bench: Recorder) -> None:
    plan = PLANS[bench.mode]["refit"]
    size: Online = plan.size  # type: ignore[assignment]
    st = online_state(size)
    before = tuple(a[: size.n_labels - size.step] for a in st["labels"])
    new = tuple(a[size.n_labels - size.step:] for a in st["labels"])
    cold, _ = _seed_side(bench, "annotate_em_refit", plan, st, st["labels"])
    agg = BayesAggregator(prior=st["alpha"], max_iter=10)

    def refit() -> None:  # the previous step's state, then the timed warm refit with this step's labels
        agg.partial_fit(new, learner_prob=st["learner"])

    def setup() -> tuple[tuple, dict]:
        agg.fit(before, learner_prob=st["learner"], **_kw(size))
        return (), {}

    setup()
    refit()
    labelled = np.unique(st["labels"][0])
    same = float((agg.posteriors_[labelled].argmax(1) == cold[labelled].argmax(1)).mean())
    bench.check("annotate_em_refit", plan, metric="same labels as a cold fit (labelled images)", value=same,
                threshold=MIN_REFIT_AGREEMENT, passed=same >= MIN_REFIT_AGREEMENT,
                detail=f"{agg.n_iter_} warm EM iterations")
    assert same >= MIN_REFIT_AGREEMENT, f"warm refit agrees with the cold fit on only {same:.2%} of labelled images"
    benchmark.group = "annotate_em_refit"
    benchmark.pedantic(refit, setup=setup, rounds=plan.rounds[OURS], warmup_rounds=0)
    s = benchmark.stats.stats
    bench.side("annotate_em_refit", OURS, plan,
               impl="BayesAggregator.partial_fit(new labels): warm-started from the previous posteriors",
               stats={"median_s": s.median, "min_s": s.min, "max_s": s.max, "rounds": s.rounds}, n_iter=agg.n_iter_)


SIM_TARGET = "< 10 minutes to 1 label/image (2-core CPU)"
SEPARABILITY = 4.0  # the CLI's default (see its --help)


@dataclass(frozen=True)
class Simulation(Size):
    n_tasks: int
    n_classes: int
    n_workers: int
    separability: float
    unit: str = "labels"

    @property
    def n_items(self) -> int:  # one label per image
        return self.n_tasks

    @property
    def label(self) -> str:
        return (f"efficient_annotation, {self.n_tasks:,} images × {self.n_classes} classes to 1 label/image, "
                f"{self.n_workers} structured-noise workers, separability {self.separability:g}")


# 100 workers: 50 would stop at 100k labels (the seed caps a worker at 2,000), short of 1 label per image
SIM_PLAN = Plan(Simulation(IMAGENET100["n_images"], IMAGENET100["n_classes"], 100, SEPARABILITY),
                {OURS: 1}, SIM_TARGET)


def test_annotate_simulation(bench: Recorder) -> None:
    """Full mode only: the whole ImageNet-100-sized run (the seed's 50 HITs × 40 images a step)."""
    from luab_fast.annotate.loop import run_method
    from luab_fast.annotate.samplers import RandomSampler

    if bench.mode != "full":
        pytest.skip("the ImageNet-100-sized simulation runs in full mode only (minutes)")
    size: Simulation = SIM_PLAN.size  # type: ignore[assignment]
    feats, truth = synthetic_problem(size.n_tasks, size.n_classes, separability=size.separability, seed=0)
    amt = load_amt()
    workers = SimulatedWorkers(structured_workers(amt, list(amt.wnids), n_workers=size.n_workers, seed=0))
    alpha = homogeneous_prior(pooled_counts(amt, list(amt.wnids)), 10.0)
    sampler = RandomSampler(size.n_tasks, size.n_workers, hit_size=40, n_hits_per_step=50)
    t0 = time.perf_counter()
    res = run_method("efficient_annotation", feats, truth, workers, sampler, alpha, budget=size.n_tasks, seed=0)
    seconds = time.perf_counter() - t0
    last = res["curve"][-1]
    ok = seconds < 600 and last.labels_per_image >= 0.99
    bench.check("annotate_simulation", SIM_PLAN, metric="accuracy of the aggregated labels", value=last.accuracy,
                threshold=0.0, passed=ok, detail=f"{last.labels_per_image:.3f} labels/image in {seconds:.0f} s, "
                                                 f"{len(res['curve'])} steps, done {last.done_fraction:.1%}")
    bench.side("annotate_simulation", OURS, SIM_PLAN, impl="run_method('efficient_annotation'): C++ EM + MLP learner",
               stats={"median_s": seconds, "min_s": seconds, "rounds": 1})
    assert ok, f"{seconds:.0f} s to {last.labels_per_image:.3f} labels/image"


ROUND_SECONDS = 5.0
ROUND_TARGET = "≤ 5 s per round at ImageNet-100 scale, features given (2-core CPU)"


@dataclass(frozen=True)
class ProjectRound(Online):
    method: str = "ds_model"

    @property
    def label(self) -> str:
        return f"{self.method}: one `next` round, " + super().label.replace(" workers", " worker slots")


def _round_plan(mode: str, method: str) -> Plan:
    # the same moment of a run as annotate_em_refit (45,000 labels in, 2,000 new), 100 worker slots: the
    # seed's 50 HITs of 40 a step need 50 free workers under the per-worker cap
    base = FULL if mode == "full" else QUICK
    size = ProjectRound(base.n_tasks, base.n_classes, 100 if mode == "full" else base.n_workers, base.n_labels,
                        base.step, method=method)
    return Plan(size, {OURS: 3}, ROUND_TARGET)


def _project_inputs(size: ProjectRound, d: Any) -> tuple[list[str], Any, Any]:
    """A project created from synthetic features with ``n_labels - step`` labels in, and the next ``step``."""
    import pandas as pd

    feats, truth = synthetic_problem(size.n_tasks, size.n_classes, separability=SEPARABILITY, seed=0)
    amt = load_amt()
    workers = SimulatedWorkers(structured_workers(amt, list(amt.wnids[: size.n_classes]), n_workers=size.n_workers,
                                                  seed=0))
    rng = np.random.default_rng(0)
    ids = np.array([f"n{i:06d}" for i in range(size.n_tasks)])
    pd.DataFrame({"task": ids}).to_csv(d / "tasks.csv", index=False)
    np.save(d / "features.npy", feats)
    gold = np.concatenate([rng.choice(np.flatnonzero(truth == k), 10, replace=False) for k in range(size.n_classes)])
    pd.DataFrame({"task": ids[gold], "label": truth[gold]}).to_csv(d / "gold.csv", index=False)
    tasks = rng.permutation(np.repeat(np.arange(size.n_tasks), 3))[: size.n_labels]
    who = rng.integers(0, size.n_workers, tasks.size)
    answers = pd.DataFrame({"task": ids[tasks], "worker": [f"w{w}" for w in who],
                            "label": workers.label(tasks, who, truth, rng)})
    first, new = d / "answers_before.csv", d / "answers_new.csv"
    answers.iloc[: size.n_labels - size.step].to_csv(first, index=False)
    answers.iloc[size.n_labels - size.step:].to_csv(new, index=False)
    create = ["--tasks", str(d / "tasks.csv"), "--features", str(d / "features.npy"), "--classes",
              str(size.n_classes), "--gold", str(d / "gold.csv"), "--method", size.method, "--batch", str(size.step),
              "--workers", str(size.n_workers)]
    return create, first, new


@pytest.mark.parametrize("method", ["ds_model", "efficient_annotation"])
def test_annotate_project_round(bench: Recorder, method: str, tmp_path: Any) -> None:
    """One `python -m luab_fast.annotate next` round, in process: load the project, ingest the step's labels,
    EM (+ learner), sample the next step's tasks (2,000 in full mode), save the state and every output
    (posteriors.csv included)."""
    import contextlib
    import io
    import shutil

    import pandas as pd

    from luab_fast.annotate.project_cli import main

    name = f"annotate_project_round_{method}"
    plan = _round_plan(bench.mode, method)
    size: ProjectRound = plan.size  # type: ignore[assignment]
    create, first, new = _project_inputs(size, tmp_path)
    saved, proj = tmp_path / "saved", tmp_path / "proj"
    with contextlib.redirect_stdout(io.StringIO()):
        main(["next", "--project", str(saved)] + create)
        main(["next", "--project", str(saved), "--labels", str(first)])
    times, cpu = [], []
    for _ in range(plan.rounds[OURS]):
        shutil.rmtree(proj, ignore_errors=True)
        shutil.copytree(saved, proj)  # the same round each time, from the same state
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            main(["next", "--project", str(proj), "--labels", str(new)])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    nxt = pd.read_csv(proj / "next.csv", dtype={"task": str})
    post = pd.read_csv(proj / "posteriors.csv", nrows=3)
    # a task may go to several HITs of a round (other workers), never twice to one HIT nor past 3 labels
    shaped = (len(nxt) == size.step and not nxt.duplicated(["task", "hit"]).any()
              and nxt["task"].value_counts().max() <= 3 and post.shape[1] == size.n_classes + 1)
    # the 5 s at ImageNet-100 scale (full mode), on the fastest round: the others count other processes
    in_time = bench.mode != "full" or min(times) <= ROUND_SECONDS
    ok = shaped and in_time
    bench.check(name, plan, metric="next.csv whole HITs of distinct tasks; posteriors.csv a column per class"
                + (f"; fastest round <= {ROUND_SECONDS:g} s" if bench.mode == "full" else ""),
                value=float(ok), threshold=1.0, passed=ok,
                detail=f"fastest {min(times):.2f} s, median {np.median(times):.2f} s wall, {np.median(cpu):.2f} s "
                       "CPU (all threads)")
    bench.side(name, OURS, plan, impl="python -m luab_fast.annotate next (in process): load, ingest, EM"
               + (" + MLP learner" if method != "ds_model" else "") + ", sample, atomic save, outputs",
               stats={"median_s": float(np.median(times)), "min_s": min(times), "max_s": max(times),
                      "rounds": len(times), "cpu_median_s": float(np.median(cpu))})
    assert shaped, f"next.csv has {len(nxt)} rows, posteriors.csv {post.shape[1]} columns"
    assert in_time, f"fastest round {min(times):.2f} s, over the {ROUND_SECONDS:g} s target"
