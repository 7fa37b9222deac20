"""The online labelling loop (luab_fast/annotate/loop.py) and its CLI: the paper's ordering on a small
synthetic problem, determinism, outputs the trainer reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from luab_fast import _cli
from luab_fast.aggregate.bayes import homogeneous_prior
from luab_fast.annotate.learner import LearnerConfig
from luab_fast.annotate.loop import run_method
from luab_fast.annotate.samplers import RandomSampler
from luab_fast.annotate.workers import SimulatedWorkers, load_amt, pooled_counts, structured_workers


@pytest.fixture(scope="module")
def problem():
    """600 images of 10 Dog-group classes; features: well-separated Gaussian clusters (a good learner's
    features); 20 structured-noise workers from the real AMT counts (≈0.44 accurate)."""
    amt = load_amt()
    classes = list(amt.groups[0][:10])
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(10), 60)
    feats = (rng.normal(size=(10, 16)) * 3.0)[truth] + rng.normal(size=(600, 16))
    workers = SimulatedWorkers(structured_workers(amt, classes, n_workers=20, seed=0))
    alpha = homogeneous_prior(pooled_counts(amt, classes), 10.0)
    return feats.astype(np.float32), truth, workers, alpha


def _run(name, problem, seed=0):
    feats, truth, workers, alpha = problem
    sampler = RandomSampler(len(truth), workers.n_workers, hit_size=20, n_hits_per_step=10)
    return run_method(name, feats, truth, workers, sampler, alpha, budget=int(1.5 * len(truth)), seed=seed,
                      learner_config=LearnerConfig(max_epochs=30))


def labels_to_reach(curve, accuracy):
    hit = [r.labels_per_image for r in curve if r.accuracy >= accuracy]
    return hit[0] if hit else float("inf")


def test_efficient_annotation_needs_fewer_labels_than_online_ds(problem):
    ds = _run("ds_model", problem)
    ours = _run("efficient_annotation", problem)
    assert 0.5 < problem[2].accuracy.mean() < 0.75  # noisy workers (10 of the 19 Dog classes: easier than all 19)
    target = 0.8
    assert labels_to_reach(ours["curve"], target) < labels_to_reach(ds["curve"], target)
    assert ours["curve"][-1].accuracy > ds["curve"][-1].accuracy
    again = _run("efficient_annotation", problem)  # deterministic for a seed
    assert [r.accuracy for r in again["curve"]] == [r.accuracy for r in ours["curve"]]


def test_caps_budget_and_records(problem):
    feats, truth, workers, alpha = problem
    res = _run("improved_lean", problem)
    tasks, who, labels = res["labels"]
    assert len(labels) <= int(1.5 * len(truth))
    assert np.bincount(tasks, minlength=len(truth)).max() <= 3  # the per-task cap
    curve = res["curve"]
    assert [r.step for r in curve] == list(range(1, len(curve) + 1))
    assert all(b.labels > a.labels for a, b in zip(curve, curve[1:]))
    assert res["posteriors"].shape == (600, 10) and np.allclose(res["posteriors"].sum(1), 1)
    with pytest.raises(ValueError, match="method"):
        run_method("oracle", feats, truth, workers, RandomSampler(600, 20, n_hits_per_step=5), alpha, 100)
    with pytest.raises(ValueError, match="features"):
        run_method("lean", None, truth, workers, RandomSampler(600, 20, n_hits_per_step=5), alpha, 100)


def test_cli_on_the_tiny_demo(tmp_path):
    from luab_fast.annotate.cli import main

    out = tmp_path / "ann"
    assert main(["--demo-size", "tiny", "--method", "ds_model", "efficient_annotation", "--budget", "1.0",
                 "--hit-size", "10", "--hits-per-step", "5", "--workers", "20", "--epochs", "10",
                 "--out", str(out)]) == 0
    curve = pd.read_csv(out / "curve.csv")
    assert list(curve.columns) == ["method", "step", "labels", "labels_per_image", "accuracy", "done_fraction"]
    assert set(curve["method"]) == {"ds_model", "efficient_annotation"}
    labels = pd.read_csv(out / "labels_efficient_annotation.csv")
    assert list(labels.columns) == ["task", "label"] and labels["label"].between(0, 9).all()
    assert (out / "curve.png").is_file()
    assert _cli.run(main, ["--features", str(tmp_path / "x.npy")]) == 2  # --truth missing


def test_replay_of_real_labels(problem, tmp_path):
    """Replaying a collected crowd through the loop uses exactly its labels, each once, and its workers."""
    from luab_fast.annotate.workers import ReplayWorkers

    feats, truth, workers, alpha = problem
    rng = np.random.default_rng(3)
    tasks = np.repeat(np.arange(600), 2)
    who = rng.integers(0, 20, tasks.size)
    labels = workers.label(tasks, who, truth, rng)
    csv = tmp_path / "crowd.csv"
    pd.DataFrame({"task": tasks, "worker": who, "label": labels}).to_csv(csv, index=False)
    replay = ReplayWorkers.from_csv(csv)
    sampler = RandomSampler(600, 20, hit_size=20, n_hits_per_step=10, max_per_task=2)
    res = run_method("ds_model", None, truth, replay, sampler, alpha, budget=10_000)
    t, w, z = res["labels"]
    got = sorted(zip(replay.task_ids[t].tolist(), replay.worker_ids[w].tolist(), replay.classes[z].tolist()))
    assert got == sorted(zip(tasks.tolist(), who.tolist(), labels.tolist()))


def test_early_stopping_fires_when_the_done_set_stops_growing():
    """Chance-level workers: almost nothing gets done, so with early stopping the run ends at the first step with
    ≥ N/2 labels and no growth of the done set for check_prev_n steps; the same run without it goes on."""
    from luab_fast.annotate.workers import from_matrices

    K, W, N = 10, 20, 600
    workers = SimulatedWorkers(from_matrices(np.full((W, K, K), 1.0 / K)))
    truth = np.repeat(np.arange(K), N // K)
    alpha = 2.0 * np.ones((K, K)) + 2.0 * np.eye(K)
    runs = {es: run_method("ds_model", None, truth, workers, RandomSampler(N, W, hit_size=20, n_hits_per_step=5),
                           alpha, budget=3 * N, early_stop=es, check_prev_n=2)["curve"] for es in (False, True)}
    stopped, full = runs[True], runs[False]
    assert len(stopped) < len(full)
    assert [(r.labels, r.accuracy) for r in stopped] == [(r.labels, r.accuracy) for r in full[: len(stopped)]]
    assert stopped[-1].labels >= N / 2 and stopped[-2].labels < N / 2  # the first step where the rule can fire
    done = [round(r.done_fraction * N) for r in stopped]
    assert max(done[-2:]) <= max(done[:-2])  # no new maximum in the last check_prev_n steps
    with pytest.raises(ValueError, match="check_prev_n"):
        run_method("ds_model", None, truth, workers, RandomSampler(N, W, n_hits_per_step=5), alpha, 100,
                   check_prev_n=0)


def test_cold_em_start_is_the_seed_and_warm_is_close(problem):
    """em_start='cold' refits from the prior on all labels, as the seed: its final posteriors are a fresh fit's.
    The default warm start ends close to it (hard EM from another start settles differently on a few images)."""
    from luab_fast.aggregate import BayesAggregator

    feats, truth, workers, alpha = problem
    runs = {}
    for start in ("cold", "warm"):
        sampler = RandomSampler(len(truth), workers.n_workers, hit_size=20, n_hits_per_step=10)
        runs[start] = run_method("ds_model", feats, truth, workers, sampler, alpha, budget=len(truth), em_start=start)
    fresh = BayesAggregator(prior=alpha, criterion="soft", max_iter=10).fit(
        runs["cold"]["labels"], n_classes=10, n_tasks=len(truth), n_workers=workers.n_workers)
    np.testing.assert_array_equal(runs["cold"]["posteriors"], fresh.posteriors_)
    assert abs(runs["warm"]["curve"][-1].accuracy - runs["cold"]["curve"][-1].accuracy) <= 0.02
    with pytest.raises(ValueError, match="em_start"):
        run_method("ds_model", feats, truth, workers, RandomSampler(600, 20, n_hits_per_step=5), alpha, 100,
                   em_start="hot")


def test_warm_learner_start_differs_from_cold_and_is_checked(problem):
    """learner_start='warm' starts each step's MLP from the last step's: a different run from the seed's fresh MLPs,
    learning as well (the demo's comparison is in learner.py); a bad value is refused before any step."""
    feats, truth, workers, alpha = problem
    runs = {}
    for start in ("cold", "warm"):
        sampler = RandomSampler(len(truth), workers.n_workers, hit_size=20, n_hits_per_step=10)
        runs[start] = run_method("efficient_annotation", feats, truth, workers, sampler, alpha, budget=len(truth),
                                 learner_config=LearnerConfig(max_epochs=10, warm_epochs=5), learner_start=start)
    assert not np.array_equal(runs["warm"]["posteriors"], runs["cold"]["posteriors"])
    assert runs["warm"]["curve"][-1].accuracy >= runs["cold"]["curve"][-1].accuracy - 0.05
    with pytest.raises(ValueError, match="learner_start"):
        run_method("ds_model", feats, truth, workers, RandomSampler(600, 20, n_hits_per_step=5), alpha, 100,
                   learner_start="hot")


def test_cli_synthetic_problem(tmp_path):
    from luab_fast.annotate.cli import main
    from luab_fast.annotate.synthetic import synthetic_problem

    out = tmp_path / "syn"
    assert main(["--synthetic", "400:8", "--separability", "3", "--method", "ds_model", "--budget", "0.5",
                 "--hit-size", "10", "--hits-per-step", "5", "--workers", "10", "--em-start", "cold",
                 "--out", str(out)]) == 0
    curve = pd.read_csv(out / "curve.csv")
    assert curve["labels"].iloc[-1] == 200 and not list(out.glob("*.tmp"))
    assert _cli.run(main, ["--synthetic", "400x8", "--out", str(out)]) == 2
    assert _cli.run(main, ["--synthetic", "400:8", "--demo", "--out", str(out)]) == 2
    feats, truth = synthetic_problem(1000, 10, dim=32, separability=2.0, seed=1)
    assert feats.shape == (1000, 32) and feats.dtype == np.float32 and np.bincount(truth).tolist() == [100] * 10
    with pytest.raises(ValueError, match="separability"):
        synthetic_problem(100, 10, separability=-1.0)
