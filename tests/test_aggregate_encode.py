"""The compiled encoders on the fit_predict path give exactly what pandas/numpy give: integer ids factorized in
order of first appearance (or sorted, for labels), with pandas' hash as the fallback for wide id ranges, and
each posterior row's argmax with numpy's rule (first maximum; a row with a NaN: its first NaN)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from luab_fast import _C
from luab_fast.aggregate import DawidSkene, make_crowd
from luab_fast.aggregate._input import _compiled_factorize, _factorize, _sorted_unique, encode


def _pandas_encoding(df: pd.DataFrame) -> tuple:
    task, task_ids = pd.factorize(df["task"], sort=False)
    worker, worker_ids = pd.factorize(df["worker"], sort=False)
    classes = _sorted_unique(df["label"])
    return task, task_ids, worker, worker_ids, classes.get_indexer(df["label"]), classes


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint8, np.uint32])
def test_factorize_matches_pandas_first_appearance(dtype):
    rng = np.random.default_rng(0)
    hi = min(np.iinfo(dtype).max, 5000)
    values = pd.Series(rng.integers(0, hi, 20_000).astype(dtype))
    codes, uniques = _compiled_factorize(values, sort=False)
    ref_codes, ref_uniques = pd.factorize(values, sort=False)
    np.testing.assert_array_equal(codes, ref_codes)
    assert uniques.equals(pd.Index(ref_uniques)) and uniques.dtype == values.dtype


def test_factorize_sorted_matches_sorted_unique_and_get_indexer():
    rng = np.random.default_rng(1)
    values = pd.Series(rng.integers(-50, 50, 5_000))  # negative ids too
    codes, classes = _compiled_factorize(values, sort=True)
    ref = _sorted_unique(values)
    assert classes.equals(ref)
    np.testing.assert_array_equal(codes, ref.get_indexer(values))


def test_wide_id_ranges_fall_back_to_pandas():
    values = pd.Series(np.array([3, 2**40, 3, -(2**62), 2**62, 2**40], dtype=np.int64))
    assert _compiled_factorize(values, sort=False) is None  # range far beyond 4n + 2^20
    codes, uniques = _factorize(values)
    np.testing.assert_array_equal(codes, [0, 1, 0, 2, 3, 1])
    assert list(uniques) == [3, 2**40, -(2**62), 2**62]
    extremes = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64)
    assert _C.aggregate.factorize_integers(extremes, False) is None  # max - min overflows int64: no table


@pytest.mark.parametrize("values", [pd.Series(["b", "a", "b"]), pd.Series([1.5, 2.5, 1.5]),
                                    pd.Series(np.array([1, 2**63 + 5, 1], dtype=np.uint64))])
def test_non_compact_integer_columns_are_not_taken(values):
    assert _compiled_factorize(values, sort=False) is None


def test_frame_encoding_is_what_pandas_gives():
    df = make_crowd(3_000, 40, 3, 7, seed=3).frame()
    df["task"] = df["task"] * 7 + 1_000  # sparse, shifted ids
    df["worker"] = df["worker"].astype(np.int32)
    enc = encode(df)
    task, task_ids, worker, worker_ids, label, classes = _pandas_encoding(df)
    np.testing.assert_array_equal(enc.task, task)
    np.testing.assert_array_equal(enc.worker, worker)
    np.testing.assert_array_equal(enc.label, label)
    assert enc.task_ids.equals(pd.Index(task_ids)) and enc.worker_ids.dtype == np.int32
    assert enc.worker_ids.equals(pd.Index(worker_ids)) and enc.classes.equals(classes)


def test_factorize_rejects_bad_arrays():
    with pytest.raises(ValueError, match="values must be a int64 array"):
        _C.aggregate.factorize_integers(np.zeros(3, np.int32), False)
    with pytest.raises(ValueError, match=r"values must have shape \(n,\)"):
        _C.aggregate.factorize_integers(np.zeros((2, 2), np.int64), False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 16, 17, 100])
def test_argmax_rows_matches_numpy(dtype, k):
    rng = np.random.default_rng(k)
    x = rng.random((500, k)).astype(dtype)
    x[::7] = np.round(x[::7] * 3) / 3  # many exact ties: the first maximum must win
    for threads in (1, 2):
        np.testing.assert_array_equal(_C.aggregate.argmax_rows(x, threads), np.argmax(x, axis=1))


def test_argmax_rows_nan_and_inf_like_numpy():
    x = np.array([[1, np.nan, 3], [np.nan, np.nan, 1], [2, 2, 1], [0, 0, 0], [-np.inf, -np.inf, -5],
                  [3, 1, np.nan]])
    np.testing.assert_array_equal(_C.aggregate.argmax_rows(x, 1), np.argmax(x, axis=1))


def test_argmax_rows_rejects_bad_arrays():
    with pytest.raises(ValueError, match="x must be 2-D"):
        _C.aggregate.argmax_rows(np.zeros(4), 1)
    with pytest.raises(ValueError, match="x must be a float64 or float32 array"):
        _C.aggregate.argmax_rows(np.zeros((2, 2), np.int64), 1)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        _C.aggregate.argmax_rows(np.zeros((4, 4))[:, ::2], 1)


def test_labels_are_the_argmax_of_the_posteriors():
    df = make_crowd(2_000, 30, 3, 10, seed=5).frame()
    for precision in ("float32", "float64"):
        est = DawidSkene(precision=precision).fit(df)
        np.testing.assert_array_equal(est.label_array_, np.argmax(est.posteriors_, axis=1))
        np.testing.assert_array_equal(est.labels_.to_numpy(), est.classes_[np.argmax(est.posteriors_, axis=1)])
