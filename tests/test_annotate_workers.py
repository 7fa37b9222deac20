"""Simulated AMT workers, label replay and HIT samplers of luab_fast.annotate, against the seed's measured
numbers (../shared/docs/aggregation.md §A) and a literal port of its worker-sampling code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA
from scipy import stats

from luab_fast.aggregate import homogeneous_prior
from luab_fast.annotate import workers as W
from luab_fast.annotate.samplers import GreedySampler, RandomSampler
from luab_fast.annotate.workers import (
    ReplayWorkers,
    SimulatedWorkers,
    from_matrices,
    load_amt,
    pooled_counts,
    structured_workers,
    uniform_workers,
)


@pytest.fixture(scope="module")
def amt():
    if not (SHARED_DATA / "amt_workers").is_dir():
        pytest.skip("shared AMT worker data not found")
    return load_amt(SHARED_DATA / "amt_workers")


def diag_acc(cms: np.ndarray) -> np.ndarray:
    return np.diagonal(cms, axis1=1, axis2=2).mean(1)


# ---------------------------------------------------------------- AMT data

def test_load_amt_format(amt):
    assert len(amt.wnids) == 100 and amt.counts.shape == (58, 100, 100)
    assert [len(g) for g in amt.groups] == [19, 18, 13, 19, 16, 15]
    assert np.bincount(amt.worker_group).tolist() == [13, 9, 9, 8, 9, 10]
    assert (amt.counts.sum((1, 2)) == 40).all()
    # every real worker only saw images of its own group's classes
    seen = amt.counts.sum(2) > 0  # [58, 100]
    assert (amt.class_group[np.nonzero(seen)[1]] == amt.worker_group[np.nonzero(seen)[0]]).all()
    pooled = amt.counts.sum(0)
    assert np.trace(pooled) / pooled.sum() == pytest.approx(0.698, abs=0.001)



def test_package_ships_the_amt_data_unchanged():
    """The package must not need ../shared at run time: it ships a copy, byte for byte the shared one."""
    assert W.DEFAULT_DIR.is_relative_to(Path(W.__file__).parent)
    for name in ("group_workers.json", "groups.txt"):
        shared = SHARED_DATA / "amt_workers" / name
        if not shared.is_file():
            pytest.skip("shared AMT worker data not found")
        assert (W.DEFAULT_DIR / name).read_bytes() == shared.read_bytes()
    assert load_amt().counts.shape == (58, 100, 100)


def test_load_amt_env_override_and_errors(amt, tmp_path, monkeypatch):
    monkeypatch.setenv(W.ENV_DIR, str(tmp_path))
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_amt()
    for name in ("group_workers.json", "groups.txt"):
        shutil.copy(amt.path / name, tmp_path / name)
    assert load_amt().wnids == amt.wnids  # the env var is honoured
    raw = json.loads((tmp_path / "group_workers.json").read_text())
    raw["group_workers"]["0"][0][0][0] = -1
    (tmp_path / "group_workers.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="non-negative"):
        load_amt()
    (tmp_path / "group_workers.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed.*group_workers.json"):
        load_amt(tmp_path)


def test_class_selection_errors(amt):
    with pytest.raises(ValueError, match="not in the AMT data"):
        structured_workers(amt, ["n00000000", amt.wnids[0]])
    with pytest.raises(ValueError, match="repeat"):
        pooled_counts(amt, [3, 3])
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        pooled_counts(amt, [0, 100])
    with pytest.raises(ValueError, match="n_workers"):
        structured_workers(amt, [0, 1], n_workers=0)


# ---------------------------------------------------------------- simulated matrices

def seed_structured(amt, wnids, seed):
    """Literal port of the seed's StructuredNoiseWorker for one worker (loops, its +1e-8, JSON group order)."""
    raw = json.loads((amt.path / "group_workers.json").read_text())
    keep = np.array([raw["imagenet100"].index(w) for w in wnids])
    npr = np.random.RandomState(seed)
    cm = sum(np.array(v).sum(0) + np.array(v)[npr.choice(range(len(v)), 1)][0] * 10
             for v in raw["group_workers"].values())
    m = cm[keep][:, keep] / (cm[keep][:, keep].sum(1, keepdims=True) + 1e-8)
    group = {w: g for g, ws in enumerate(amt.groups) for w in ws}
    for i, wi in enumerate(wnids):
        same = np.array([j == i or group[wj] == group[wi] for j, wj in enumerate(wnids)])
        if (~same).sum() > 0:
            dens = m[i, same].sum()
            m[i, same] *= 0.97
            m[i, ~same] += dens * 0.03 / (~same).sum()
    return m


def test_structured_matches_seed_code(amt):
    wnids = list(amt.groups[0][:4] + amt.groups[3][:3] + amt.groups[5][:2])
    ours = structured_workers(amt, wnids, n_workers=4, seed=123)
    for i in range(4):
        np.testing.assert_allclose(ours[i], seed_structured(amt, wnids, 123 + i), rtol=1e-7, atol=1e-10)


def test_structured_imagenet100_accuracy(amt):
    cms = structured_workers(amt, amt.wnids, n_workers=50, seed=0)
    assert cms.shape == (50, 100, 100) and cms.dtype == np.float64
    np.testing.assert_allclose(cms.sum(-1), 1, atol=1e-12)
    acc = diag_acc(cms)
    assert 0.66 <= acc.mean() <= 0.72  # doc: ≈0.68 sampled, 0.70 in the paper
    assert acc.min() >= 0.60 and acc.max() <= 0.74  # doc: individual workers 0.60–0.74
    np.testing.assert_array_equal(cms, structured_workers(amt, amt.wnids, n_workers=50, seed=0))
    assert not np.array_equal(cms[:5], structured_workers(amt, amt.wnids, n_workers=5, seed=1))


def test_structured_dog_accuracy_and_no_spread(amt):
    dog = list(amt.groups[0])  # the seed's imagenet_split_0
    cms = structured_workers(amt, dog, n_workers=50, seed=0)
    assert abs(diag_acc(cms).mean() - 0.43) <= 0.04
    # one group only: nowhere to spread to, the rows are the normalised sampled counts untouched
    base = W._base_matrices(amt, amt.class_indices(dog), W._sample_picks(amt, 50, 0, n_draw=1))
    np.testing.assert_array_equal(cms, base)


def test_spread_moves_three_percent_out_of_group(amt):
    classes = list(amt.groups[1][:3] + amt.groups[4][:5])  # 3 + 5 classes of two groups
    keep = amt.class_indices(classes)
    base = W._base_matrices(amt, keep, W._sample_picks(amt, 6, 7, n_draw=1))
    cms = structured_workers(amt, classes, n_workers=6, seed=7)
    same = amt.class_group[keep][:, None] == amt.class_group[keep][None, :]
    in_mass = (base * same).sum(-1)  # [W, K]
    np.testing.assert_allclose(np.where(same, cms, 0), np.where(same, 0.97 * base, 0), atol=1e-14)
    added = np.where(same, 0, cms - base)  # each outside class gets an equal share of the 3%
    n_out = (~same).sum(1)
    np.testing.assert_allclose(added, np.where(same, 0, (0.03 * in_mass / n_out)[:, :, None]), atol=1e-14)
    np.testing.assert_allclose(cms.sum(-1), 1, atol=1e-12)


def test_uniform_noise_keeps_diagonal(amt):
    cms = uniform_workers(amt, amt.wnids, n_workers=8, seed=3)
    base = W._base_matrices(amt, np.arange(100), W._sample_picks(amt, 8, 3, n_draw=10))
    # every class has classes outside its group, so the kept diagonal is scaled by the 0.97 spread only
    np.testing.assert_allclose(np.diagonal(cms, axis1=1, axis2=2), 0.97 * np.diagonal(base, axis1=1, axis2=2),
                               atol=1e-14)
    np.testing.assert_allclose(cms.sum(-1), 1, atol=1e-12)
    # off-diagonal cells are constant within the row's group and within the outside classes
    g = amt.class_group
    for y in (0, 57):
        row = cms[2, y]
        inside = (g == g[y]) & (np.arange(100) != y)
        assert np.ptp(row[inside]) < 1e-14 and np.ptp(row[g != g[y]]) < 1e-14


def test_pooled_counts_give_seed_prior(amt):
    p = homogeneous_prior(pooled_counts(amt, amt.wnids), 10)
    assert p[0, 0] == pytest.approx(162.0, abs=0.05) and p[0, 1] == pytest.approx(0.707, abs=5e-4)
    d = homogeneous_prior(pooled_counts(amt, list(amt.groups[0])), 10)
    assert d[0, 0] == pytest.approx(122.6, abs=0.05) and d[0, 1] == pytest.approx(8.39, abs=5e-3)
    assert d[0, 0] / d[0].sum() == pytest.approx(0.448, abs=5e-4)


def test_from_matrices_names_the_problem():
    good = np.full((2, 3, 3), 1 / 3)
    np.testing.assert_array_equal(from_matrices(good), good)
    with pytest.raises(ValueError, match=r"\[W, K, K\]"):
        from_matrices(np.full((3, 3), 1 / 3))
    bad = good.copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        from_matrices(bad)
    bad = good.copy()
    bad[1, 0] = [1.5, -0.5, 0]
    with pytest.raises(ValueError, match=">= 0"):
        from_matrices(bad)
    bad = good.copy()
    bad[1, 2, 0] = 0.5
    with pytest.raises(ValueError, match="worker 1, row 2"):
        from_matrices(bad)


# ---------------------------------------------------------------- label draws

def test_label_frequencies_match_rows():
    cms = np.array([[[0.7, 0.2, 0.1, 0.0], [0.05, 0.9, 0.05, 0.0], [0.25] * 4, [0.0, 0.0, 0.5, 0.5]],
                    [[0.4, 0.3, 0.2, 0.1], [0.0, 0.0, 0.0, 1.0], [0.1, 0.1, 0.7, 0.1], [0.3, 0.3, 0.3, 0.1]]])
    sim = SimulatedWorkers(cms)
    truth = np.array([0, 1, 2, 3])
    n = 8000  # per (worker, class) row
    tasks = np.tile(np.repeat(np.arange(4), n), 2)
    workers = np.repeat([0, 1], 4 * n)
    z = sim.label(tasks, workers, truth, np.random.default_rng(0))
    assert z.dtype == np.int64 and z.shape == tasks.shape
    for w in range(2):
        for y in range(4):
            obs = np.bincount(z[(workers == w) & (tasks == y)], minlength=4)
            p = cms[w, y]
            assert (obs[p == 0] == 0).all()  # impossible labels never drawn
            if (p > 0).sum() == 1:  # a certain answer: nothing to test statistically
                assert obs[p > 0] == n
                continue
            exp = p[p > 0] * n
            assert stats.chi2.sf(((obs[p > 0] - exp) ** 2 / exp).sum(), (p > 0).sum() - 1) > 1e-4
    again = sim.label(tasks, workers, truth, np.random.default_rng(0))
    np.testing.assert_array_equal(z, again)


def test_label_bad_inputs():
    sim = SimulatedWorkers(np.full((2, 3, 3), 1 / 3))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="rng"):
        sim.label([0], [0], [0], np.random.RandomState(0))
    with pytest.raises(ValueError, match="workers"):
        sim.label([0], [2], [0], rng)
    with pytest.raises(ValueError, match="truth"):
        sim.label([0], [0], [3], rng)
    with pytest.raises(ValueError, match="same length"):
        sim.label([0, 0], [0], [1], rng)


# ---------------------------------------------------------------- replay

def test_replay_reproduces_real_labels_exactly():
    path = SHARED_DATA / "crowd" / "dog" / "label.csv"
    if not path.is_file():
        pytest.skip("shared crowd data not found")
    df = pd.read_csv(path)
    rep = ReplayWorkers.from_csv(path)
    assert rep.n_labels == len(df)
    parts = [rep.next_labels(1000) for _ in range(-(-len(df) // 1000))]
    t, w, z = (np.concatenate(c) for c in zip(*parts))
    np.testing.assert_array_equal(rep.task_ids[t], df["item"])
    np.testing.assert_array_equal(rep.worker_ids[w], df["worker"])
    np.testing.assert_array_equal(rep.classes[z], df["label"])
    assert rep.n_remaining == 0 and rep.next_labels(5)[0].size == 0

    # task-driven replay (what a sampler asks for): each task's labels come back in collection order
    rep.reset()
    rng = np.random.default_rng(0)
    got = []
    while rep.n_remaining:
        ask = np.repeat(rng.integers(0, rep.n_tasks, 500), 2)  # repeats ask for successive labels
        avail = rep.available()
        served = rep.take(ask)
        asked = np.bincount(ask, minlength=rep.n_tasks)
        assert served[0].size == np.minimum(asked, avail).sum()
        np.testing.assert_array_equal(rep.available(), np.maximum(avail - asked, 0))
        assert rep.available_for(int(ask[0])) == max(avail[ask[0]] - asked[ask[0]], 0)
        got.append(pd.DataFrame(dict(zip(("item", "worker", "label"), served))))
        if rep.n_remaining and rng.random() < 0.2:  # interleaving collection-order reads keeps per-task order
            got.append(pd.DataFrame(dict(zip(("item", "worker", "label"), rep.next_labels(300)))))
    got = pd.concat(got, ignore_index=True)
    got["item"] = rep.task_ids[got["item"]]
    got["worker"], got["label"] = rep.worker_ids[got["worker"]], rep.classes[got["label"]]
    key = ["item", "worker", "label"]
    pd.testing.assert_frame_equal(got.sort_values("item", kind="stable")[key].reset_index(drop=True),
                                  df.sort_values("item", kind="stable")[key].reset_index(drop=True))
    with pytest.raises(ValueError, match="not found"):
        ReplayWorkers.from_csv(path.parent / "missing.csv")


# ---------------------------------------------------------------- samplers

def test_random_sampler_caps_and_hits():
    s = RandomSampler(60, 8, hit_size=5, n_hits_per_step=3, max_per_task=3, max_per_worker=20)
    rng = np.random.default_rng(1)
    n_steps = 0
    while not s.stop():
        tasks, workers = s.next_step(rng)
        hits = np.split(tasks, np.flatnonzero(np.diff(workers)) + 1)
        assert len(hits) == np.unique(workers).size <= 3  # one HIT per worker per step
        assert all(np.unique(h).size == h.size for h in hits)  # no task twice in a HIT
        s.update(tasks, workers)
        assert s.task_counts.max() <= 3 and s.worker_counts.max() <= 20
        n_steps += 1
    # 180 task slots > 160 worker slots: stops once every worker hit its cap (4 HITs each, 3 HITs a step)
    assert (s.worker_counts == 20).all() and n_steps == -(-8 * 4 // 3)
    with pytest.raises(ValueError, match="takes no"):
        s.next_step(rng, posterior=np.ones((60, 2)))


def test_eligibility_threshold_lowering_and_stop():
    s = RandomSampler(8, 2, hit_size=5, n_hits_per_step=1, max_per_task=1)
    s.set_risk([0.5, 0.5, 0.05, 0.05, 0.05, 0.03, 0.03, 0.01])
    mask, thres = s.eligible()
    assert thres == pytest.approx(0.04) and mask.tolist() == [True] * 5 + [False] * 3
    tasks, _ = s.next_step(np.random.default_rng(0))
    assert sorted(tasks.tolist()) == [0, 1, 2, 3, 4] and s.last_threshold == pytest.approx(0.04)
    s.update(tasks, np.zeros(5, np.int64))
    assert s.stop()  # the rest are confident (risk < 0.1)
    # asked anyway, with 3 open tasks left: the threshold drops below the lowest of them, the HIT shrinks to 3
    tasks, _ = s.next_step(np.random.default_rng(0))
    assert sorted(tasks.tolist()) == [5, 6, 7] and s.last_threshold == pytest.approx(0.0)
    s.update(tasks, np.ones(3, np.int64))
    assert s.next_step(np.random.default_rng(0))[0].size == 0  # every task capped
    s2 = RandomSampler(3, 1, hit_size=2, n_hits_per_step=1)
    s2.set_risk([0.05, 0.0, 0.2])
    assert not s2.stop()
    s2.set_risk([0.05, 0.0, 0.09])
    assert s2.stop()


def test_greedy_picks_expected_best_worker():
    diag = np.array([[0.9, 0.2, 0.2], [0.5, 0.9, 0.9], [0.6, 0.6, 0.6]])
    s = GreedySampler(30, 3, hit_size=10, n_hits_per_step=2)
    post = np.tile([1.0, 0.0, 0.0], (30, 1))
    _, workers = s.next_step(np.random.default_rng(0), posterior=post, worker_cms=diag)
    assert workers[::10].tolist() == [0, 2]  # best, then the next best (one HIT per worker per step)
    post = np.tile([0.0, 0.5, 0.5], (30, 1))
    cms = np.stack([np.diag(d) + (1 - d)[:, None] / 2 * (1 - np.eye(3)) for d in diag]) * 37  # raw counts work
    _, workers = s.next_step(np.random.default_rng(0), posterior=post, worker_cms=cms)
    assert workers[::10].tolist() == [1, 2]


def test_greedy_exploration_spreads_work():
    rng_acc = np.random.default_rng(5)
    diag = np.sort(rng_acc.uniform(0.3, 0.9, (20, 4)), axis=0)  # worker 19 best at every class

    def used(exploration: float) -> int:
        s = GreedySampler(400, 20, hit_size=10, n_hits_per_step=2, exploration=exploration)
        rng = np.random.default_rng(11)
        post = np.full((400, 4), 0.25)
        for _ in range(15):
            tasks, workers = s.next_step(rng, posterior=post, worker_cms=diag)
            s.update(tasks, workers)
        return int((s.worker_counts > 0).sum())

    assert used(0.0) == 2 and used(0.5) > 6
    assert used(0.5) == used(0.5)  # deterministic given the Generator's seed


def test_sampler_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="hit_size"):
        RandomSampler(10, 2, hit_size=0)
    with pytest.raises(ValueError, match="n_hits_per_step"):
        RandomSampler(10, 2, n_hits_per_step=3)
    with pytest.raises(ValueError, match="max_per_worker"):
        RandomSampler(10, 2, hit_size=5, n_hits_per_step=1, max_per_worker=4)
    with pytest.raises(ValueError, match="risk_thres"):
        RandomSampler(10, 2, n_hits_per_step=1, risk_thres=1.5)
    with pytest.raises(ValueError, match="exploration"):
        GreedySampler(10, 2, n_hits_per_step=1, exploration=-0.1)
    s = GreedySampler(10, 2, hit_size=2, n_hits_per_step=1)
    with pytest.raises(ValueError, match="risk"):
        s.set_risk(np.ones(9))
    with pytest.raises(ValueError, match="tasks"):
        s.update([10], [0])
    with pytest.raises(ValueError, match="rng"):
        s.next_step(np.random.RandomState(0), posterior=np.ones((10, 3)), worker_cms=np.ones((2, 3)))
    with pytest.raises(ValueError, match="posterior"):
        s.next_step(np.random.default_rng(0), posterior=np.ones((9, 3)), worker_cms=np.ones((2, 3)))
    with pytest.raises(ValueError, match="worker_cms"):
        s.next_step(np.random.default_rng(0), posterior=np.ones((10, 3)), worker_cms=np.ones((3, 3)))
