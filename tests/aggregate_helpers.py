"""Assertions with diagnostics for the label-aggregation tests: every failure says how many values are
off, the max and mean error, and the first mismatching task ids (style: one table of tolerances per
test file, no bare allclose)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd


def _first(ids: Sequence[Any], n: int = 5) -> list:
    return [i.item() if isinstance(i, np.generic) else i for i in list(ids)[:n]]


def assert_close(actual: Any, expected: Any, atol: float, what: str, index: Sequence[Any] | None = None) -> None:
    """|actual - expected| <= atol everywhere (NaN/inf on either side counts as a mismatch). ``index``
    names the rows (task ids) for the message."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    if a.size == 0:
        return
    err = np.abs(a - e)
    bad = ~(err <= atol)  # NaN -> bad
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0]) if bad.ndim else np.array([0])
        ids = _first(np.asarray(index, dtype=object)[rows]) if index is not None else _first(rows)
        finite = err[np.isfinite(err)]
        mx, mean = (finite.max(), finite.mean()) if finite.size else (np.nan, np.nan)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} values differ by more than {atol:g}; max error {mx:.3g}, "
            f"mean {mean:.3g}, non-finite {int((~np.isfinite(err)).sum())}; first mismatching rows {ids}")


def assert_frames_close(ours: pd.DataFrame, ref: pd.DataFrame, atol: float, what: str) -> None:
    """Aligns ``ours`` to ``ref``'s index and columns (crowd-kit orders them its own way) and compares."""
    missing_rows = ref.index.difference(ours.index)
    missing_cols = ref.columns.difference(ours.columns)
    assert missing_rows.empty and missing_cols.empty, (
        f"{what}: ours lacks rows {_first(missing_rows)} / columns {_first(missing_cols)} that the reference has")
    aligned = ours.reindex(index=ref.index, columns=ref.columns)
    assert_close(aligned.to_numpy(np.float64), ref.to_numpy(np.float64), atol, what, index=ref.index)


def assert_labels_equal(ours: pd.Series, ref: pd.Series, what: str, mask: np.ndarray | None = None) -> None:
    """Same label per task of ``ref`` (optionally only where ``mask``, aligned with ``ref``)."""
    o = ours.reindex(ref.index)
    diff = (o.to_numpy() != ref.to_numpy())
    if mask is not None:
        diff &= np.asarray(mask, bool)
    if diff.any():
        bad = ref.index[diff]
        pairs = [(t, o[t], ref[t]) for t in _first(bad)]
        raise AssertionError(f"{what}: {int(diff.sum())} of {len(ref)} tasks have a different label; "
                             f"first (task, ours, reference): {pairs}")


def accuracy(labels: pd.Series, truth: pd.Series) -> float:
    """Share of gold tasks (that have labels) where ``labels`` equals the gold label."""
    gold = truth[truth.index.isin(labels.index)]
    assert len(gold) > 0, "no task with both labels and gold"
    return float((labels.reindex(gold.index).to_numpy() == gold.to_numpy()).mean())


def top2_gap(probas: pd.DataFrame) -> np.ndarray:
    """Per task, the gap between the two largest probabilities (inf with a single class)."""
    p = np.sort(probas.to_numpy(np.float64), axis=1)
    return p[:, -1] - p[:, -2] if p.shape[1] > 1 else np.full(p.shape[0], np.inf)
