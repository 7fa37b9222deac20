"""The task view's parallel build (csrc/aggregate/crowd.cpp build_task_view: a run of labels per thread, from
2**17 labels a thread) gives the serial build's view, so the votes that read it (crowd-kit's MajorityVote, Wawa,
GoldMajorityVote) are the same bits on any thread count; and they agree with a plain numpy count."""

from __future__ import annotations

import numpy as np
import pytest

from luab_fast._ext import HAS_EXT

pytestmark = pytest.mark.skipif(not HAS_EXT, reason="needs luab_fast._C")

N_LABELS = 3 * 2**17 + 12_345  # three runs of labels: the parallel build on 2 and 3 threads


@pytest.fixture(scope="module")
def crowd():
    rng = np.random.default_rng(4)
    n_tasks, n_workers, n_classes = 40_000, 700, 7
    task = rng.integers(0, n_tasks, N_LABELS)  # unsorted: each task's labels spread over every run
    worker = rng.integers(0, n_workers, N_LABELS)
    label = rng.integers(0, n_classes, N_LABELS)
    return task, worker, label, n_tasks, n_workers, n_classes


def test_vote_shares_equal_numpy_counts_on_any_thread_count(crowd):
    from luab_fast._C import aggregate

    task, worker, label, T, W, K = crowd
    counts = np.zeros((T, K))
    np.add.at(counts, (task, label), 1.0)
    with np.errstate(invalid="ignore"):
        expected = counts / counts.sum(1, keepdims=True)
    runs = [aggregate.crowdkit_vote(task, worker, label, T, W, K, shares=True, n_threads=n) for n in (1, 2, 3)]
    for post, labels, undefined in runs:
        np.testing.assert_array_equal(post, expected)
        np.testing.assert_array_equal(labels, runs[0][1])
        assert undefined == runs[0][2] == int((counts.sum(1) == 0).sum())


def test_skill_weighted_vote_same_on_any_thread_count(crowd):
    from luab_fast._C import aggregate

    task, worker, label, T, W, K = crowd
    reference = np.where(np.arange(T) % 3 == 0, np.arange(T) % K, -1).astype(np.int64)  # gold on a third
    for ref in (None, reference):  # Wawa (the plain vote as reference), GoldMajorityVote
        runs = [aggregate.skill_weighted_vote(task, worker, label, T, W, K, reference=ref, n_threads=n)
                for n in (1, 2, 3)]
        for hits, counted, labels, undefined in runs[1:]:
            np.testing.assert_array_equal(hits, runs[0][0])
            np.testing.assert_array_equal(counted, runs[0][1])
            np.testing.assert_array_equal(labels, runs[0][2])
            assert undefined == runs[0][3]
    # the counted answers: each worker's distinct (task, label) pairs on tasks with gold
    hits, counted, _, _ = runs[0]
    keep = reference[task] >= 0
    pairs = np.unique(np.stack([worker[keep], task[keep], label[keep]]), axis=1)
    np.testing.assert_array_equal(counted, np.bincount(pairs[0], minlength=W))
    right = reference[pairs[1]] == pairs[2]
    np.testing.assert_array_equal(hits, np.bincount(pairs[0][right], minlength=W))
