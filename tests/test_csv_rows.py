"""``_C.io.csv_rows`` and ``write_table_csv`` (luab_fast/annotate/project_report.py): the rows an annotation round's
posteriors.csv is made of. Every value reads back as the same float32; ids are quoted as pandas quotes them; the
bytes do not depend on the thread count; bad arguments are ValueErrors naming them."""

from __future__ import annotations

import csv
import io as stdio
import re

import numpy as np
import pandas as pd
import pytest

from luab_fast._ext import HAS_EXT
from luab_fast.annotate.project_report import write_table_csv

pytestmark = pytest.mark.skipif(not HAS_EXT, reason="needs luab_fast._C")


def _values(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Posterior-like float32 rows, with the awkward cases: tiny, subnormal, 0, 1, and values near 1."""
    rng = np.random.default_rng(seed)
    v = rng.dirichlet(np.full(k, 0.05), n).astype(np.float32)
    v[0, :5] = [0.0, 1.0, 1e-45, 3.4028235e38, np.float32(1) - np.float32(2**-24)]
    v[1, :3] = [1e-38, 0.1, 1 / 3]
    return v


def test_values_read_back_exactly(tmp_path):
    from luab_fast._C import io

    v = _values(2000, 7)
    ids = [f"t{i}" for i in range(len(v))]
    text = io.csv_rows(ids, v).decode()
    back = pd.read_csv(stdio.StringIO(text), header=None, dtype={0: str}, dtype_backend="numpy_nullable")
    assert back[0].tolist() == ids
    np.testing.assert_array_equal(back.iloc[:, 1:].to_numpy(np.float64).astype(np.float32), v)
    # the shortest form: never longer than numpy's own shortest round-trip repr of the float32
    for row in text.splitlines()[:50]:
        for s, x in zip(row.split(",")[1:], v[int(row.split(",")[0][1:])]):
            assert np.float32(s) == x and len(s) <= len(np.format_float_scientific(x, unique=True)) + 1, (s, x)


def test_ids_quoted_as_pandas_quotes_them(tmp_path):
    from luab_fast._C import io

    ids = ["plain", "with,comma", 'say "hi"', "two\nlines", "", "ünï"]
    v = np.arange(len(ids) * 2, dtype=np.float32).reshape(-1, 2) / 8
    ours = io.csv_rows(ids, v).decode()
    ref = pd.DataFrame({"task": ids, "a": v[:, 0], "b": v[:, 1]}).to_csv(index=False, header=False, lineterminator="\n")
    # the same bytes but for the numbers' spelling (pandas writes 0.0 where the shortest form is 0)
    assert re.sub(r"(?<=,)(\d+)(?=[,\n])", r"\1.0", ours) == ref
    rows = list(csv.reader(ours.splitlines(keepends=True)))
    assert [r[0] for r in rows] == ids and np.array_equal(np.array([r[1:] for r in rows], np.float32), v)


def test_same_bytes_on_any_thread_count():
    from luab_fast._C import io

    v = _values(5000, 11, seed=1)
    ids = [f"task-{i}" for i in range(len(v))]
    one = io.csv_rows(ids, v, n_threads=1)
    assert io.csv_rows(ids, v, n_threads=2) == one == io.csv_rows(ids, v, n_threads=7)


def test_write_table_csv_is_what_pandas_reads(tmp_path):
    v = _values(40_000, 5, seed=2).astype(np.float64)  # float64 posteriors are written as float32
    ids = [f"n{i:06d}" for i in range(len(v))]
    path = tmp_path / "posteriors.csv"
    write_table_csv(path, ids, ["task", "cat", "dog, hot", "a", "b", "c"], v, chunk=7_000)  # chunks join cleanly
    back = pd.read_csv(path, dtype={"task": str})
    assert back.columns.tolist() == ["task", "cat", "dog, hot", "a", "b", "c"]
    assert back["task"].tolist() == ids
    np.testing.assert_array_equal(back.iloc[:, 1:].to_numpy().astype(np.float32), v.astype(np.float32))


@pytest.mark.parametrize("values,ids,message", [
    (np.zeros((3, 2), np.float64), ["a", "b", "c"], "values must be a float32 array"),
    (np.zeros(3, np.float32), ["a", "b", "c"], r"values must have shape \(n, n\)"),
    (np.zeros((4, 2), np.float32)[::2], ["a", "b"], "values must be C-contiguous"),
    (np.zeros((3, 2), np.float32), ["a", "b"], "ids must hold one id per row of values"),
])
def test_bad_arguments_named(values, ids, message):
    from luab_fast._C import io

    with pytest.raises(ValueError, match=message):
        io.csv_rows(ids, values)
    with pytest.raises(ValueError, match="n_threads"):
        io.csv_rows(["a"], np.zeros((1, 1), np.float32), n_threads=-1)
