"""luab_fast.crowdkit's ``encode`` on a large frame (>= 100k rows: its integer columns go to one compiled call, a
column a thread) gives what encoding each column alone gives: codes, ids, their dtype and name, in either order;
string columns and integer ids too spread out for a direct table fall back to pandas, in the same call."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from luab_fast._ext import HAS_EXT
from luab_fast.crowdkit._frame import encode, factorize

pytestmark = pytest.mark.skipif(not HAS_EXT, reason="needs luab_fast._C")

ROWS = 150_000


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(9)
    return pd.DataFrame({
        "task": rng.integers(0, 60_000, ROWS) + 7,                              # compact ints: the direct table
        "worker": np.array([f"w{i}" for i in range(900)])[rng.integers(0, 900, ROWS)],  # strings: pandas
        "label": rng.integers(0, 5, ROWS).astype(np.int32) * 10**8,             # int32, 4e8 apart: too spread out
    })


@pytest.mark.parametrize("orders", [("first", "first", "first"), ("sorted", "sorted", "sorted"),
                                    ("first", "sorted", "first")])
@pytest.mark.parametrize("n_threads", [None, 1])
def test_large_frame_encodes_as_each_column_alone(frame, orders, n_threads):
    crowd = encode(frame, *orders, n_threads=n_threads)
    got = [(crowd.task, crowd.tasks), (crowd.worker, crowd.workers), (crowd.label, crowd.classes)]
    for (codes, ids), name, order in zip(got, ("task", "worker", "label"), orders):
        want_codes, want_ids = factorize(frame[name], order, name)
        np.testing.assert_array_equal(codes, want_codes, err_msg=name)
        pd.testing.assert_index_equal(ids, want_ids)
        assert codes.dtype == np.int64 and codes.flags.c_contiguous


def test_large_frame_refuses_a_bad_order(frame):
    with pytest.raises(ValueError, match="order must be one of"):
        encode(frame, tasks="random")
