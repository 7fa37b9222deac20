"""``--labels`` as a table by source row: hard labels (class indices or class names) or posteriors (one column
per class, by name or number), every value checked, errors naming the file, the tasks and what came."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from .._cli import DataError
from .source import MAX_CLASSES, ImageList

_EXPECTED = "task,label or task,<one column per class>"


def labels_table(labels: Any, images: ImageList) -> torch.Tensor:
    """int64 [N] hard labels or float32 [N, C] posteriors by row, from an array or a CSV (task, label[, ...])."""
    if isinstance(labels, (str, Path)):
        return _labels_csv(Path(labels), images)
    t = torch.as_tensor(np.asarray(labels))
    if t.dim() not in (1, 2) or t.shape[0] != len(images):
        raise ValueError(f"labels must be [N={len(images)}] classes or [N, C] posteriors by row, got {tuple(t.shape)}")
    if t.dim() == 1:
        v = t.double().numpy()
        _refuse(np.flatnonzero(~(np.isfinite(v) & (v == np.round(v)) & (np.abs(v) < MAX_CLASSES))),  # 1e30 wraps
                "labels: hard labels must be integers", images.stems,
                lambda r: f"{v[r]:g}")
        return t.long()
    _check_posteriors(t.double().numpy(), None, images.stems, "labels")
    return t.float()


def _labels_csv(path: Path, images: ImageList) -> torch.Tensor:
    arg = f"--labels {path}"
    if not path.is_file():
        got = "a directory" if path.is_dir() else "no such file"
        raise ValueError(f"{arg}: expected a CSV file ({_EXPECTED}), got {got}")
    try:
        df = pd.read_csv(path, dtype={"task": str})  # as str: ids like 000123 keep their zeros
    except pd.errors.EmptyDataError:
        raise DataError(f"{arg}: expected columns {_EXPECTED}, got an empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{arg}: not a readable CSV ({_EXPECTED}): {e}") from None
    cols = [str(c) for c in df.columns]
    if "task" not in cols or len(cols) < 2:
        raise DataError(f"{arg}: expected columns {_EXPECTED}, got {','.join(cols)}")
    counts = df["task"].value_counts(sort=False)
    if (counts > 1).any():
        dup = counts[counts > 1]
        got = ", ".join(f"{t!r} {n} times" for t, n in dup.head(3).items())
        raise DataError(f"{arg}: each task must be listed once, got {got}"
                        + (f" ({len(dup)} tasks in all)" if len(dup) > 3 else ""))
    df = df.set_index("task")
    missing = [s for s in images.stems if s not in df.index]
    if missing:
        raise DataError(f"--labels CSV {path} lacks {len(missing)} of the source's images, e.g. {missing[:3]}")
    df, stems = df.loc[images.stems], images.stems
    if "label" in df.columns:
        return _hard_labels(df["label"], images, arg)
    cols, classes = [str(c) for c in df.columns], list(images.classes)
    order = _class_order(cols, classes)
    if order is None:
        known = [c for c in cols if c in classes]
        odd = [c for c in cols if c not in classes] if known else [c for c in cols if not re.fullmatch(r"\D*\d+", c)]
        names = ",".join(classes[:4]) + (",..." if len(classes) > 4 else "")
        raise DataError(f"{arg}: expected columns task,label or task,<one column per class: the data's "
                        f"{len(classes)} class names ({names}) in any order, or 0..C-1>, got task,{','.join(cols)}"
                        + (f"; unexpected: {','.join(odd[:5])}" if odd else "")
                        + (f"; missing: {','.join([c for c in classes if c not in cols][:5])}" if known else ""))
    if len(cols) != len(classes):  # before the row sums, which a missing class breaks too
        raise DataError(f"{arg}: posteriors have {len(cols)} columns, the data {len(classes)} classes")
    raw = df.iloc[:, order]
    v = raw.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)  # text -> NaN, refused below
    _check_posteriors(v, raw, stems, arg)
    return torch.from_numpy(v.astype(np.float32))


def _hard_labels(col: pd.Series, images: ImageList, arg: str) -> torch.Tensor:
    """Class indices or the data's class names (e.g. wnids), mapped to their indices. Where every class name is
    a number (folders 0..10, which sort as 0, 1, 10, 2, ...), a number names its folder, as a posterior column or
    an evaluation split's folder does: index and name would disagree, and the name is what the user sees."""
    classes = images.classes
    want = f"{arg}: label must be a class index 0..{len(classes) - 1} or a class name of the data"
    numbered = _numbered(classes)
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and numbered is None:
        v = col.to_numpy(np.float64)
        # the range is checked against the model's classes later; here only what could be a class id at all
        # (1e30 would wrap around in int64)
        ok = np.isfinite(v) & (v == np.round(v)) & (np.abs(v) < MAX_CLASSES)
        v = np.where(ok, v, -1)
    else:
        by_name = {c: k for k, c in enumerate(classes)}

        def index(x: Any) -> int:  # -1: not a label
            if isinstance(x, str) and x in by_name:
                return by_name[x]
            if isinstance(x, str) and re.fullmatch(r"\s*\d{1,18}\s*", x):  # "3" in a column that also holds names
                x = int(x)
            if isinstance(x, (int, np.integer, float)) and np.isfinite(x) and 0 <= x < MAX_CLASSES and x == int(x):
                return numbered.get(int(x), -1) if numbered is not None else int(x)
            return -1

        v = col.map(index).to_numpy(np.int64)
        ok = v >= 0
    _refuse(np.flatnonzero(~ok), want, images.stems, lambda r: _show(col.iat[r]))
    return torch.from_numpy(v.astype(np.int64))


def _numbered(classes: tuple[str, ...]) -> Optional[dict[int, int]]:
    """{number: class index} when every class name is a distinct decimal number whose order as text differs
    from its order as a number (ImageFolder sorts names as text); None otherwise (then index = name's number)."""
    if not classes or not all(re.fullmatch(r"\d+", c) for c in classes):
        return None
    nums = {int(c): k for k, c in enumerate(classes)}
    if len(nums) != len(classes) or all(n == k for n, k in nums.items()):
        return None
    return nums


def _class_order(cols: list[str], classes: list[str]) -> Optional[list[int]]:
    """Positions of the class columns in class order: by the data's class names, else by number (0..C-1,
    after one common prefix if any, e.g. p0..p9); None when they are neither."""
    if sorted(cols) == sorted(classes):
        return [cols.index(c) for c in classes]
    m = [re.fullmatch(r"(\D*)(0|[1-9]\d*)", c) for c in cols]
    if all(m) and len({x[1] for x in m}) == 1 and sorted(int(x[2]) for x in m) == list(range(len(cols))):
        return sorted(range(len(cols)), key=lambda i: int(m[i][2]))
    return None


def _check_posteriors(v: np.ndarray, raw: Optional[pd.DataFrame], stems: list[str], arg: str) -> None:
    """Finite, >= 0 and rows summing to 1 (within 1e-3); ``raw`` (as read) shows the offending cells."""
    bad = ~np.isfinite(v) | (v < 0)
    _refuse(np.flatnonzero(bad.any(1)), f"{arg}: posteriors must be finite numbers >= 0", stems,
            lambda r: ", ".join(f"{raw.columns[j]}={_show(raw.iat[r, j])}" if raw is not None else f"{v[r, j]:g}"
                                for j in np.flatnonzero(bad[r])))
    s = v.sum(1)
    _refuse(np.flatnonzero(np.abs(s - 1) > 1e-3), f"{arg}: each posterior row must sum to 1 (within 1e-3)", stems,
            lambda r: f"sum {s[r]:.6g}")


def _refuse(rows: np.ndarray, what: str, stems: list[str], show) -> None:
    """ValueError ``what``, showing the first offending rows by task id, if there are any."""
    if len(rows):
        got = ", ".join(f"{show(r)} for task {stems[r]}" for r in rows[:3])
        raise DataError(f"{what}, got {got}" + (f" ({len(rows)} rows in all)" if len(rows) > 3 else ""))


def _show(x: Any) -> str:
    return "empty" if pd.isna(x) else repr(x) if isinstance(x, str) else f"{x:g}" if isinstance(x, float) else str(x)
