"""--labels as read by luab_fast.data.labels_table.labels_table: hard labels by class index or class name,
posteriors by class-name or numbered columns (in any order), and clear errors for malformed files."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from luab_fast.data.labels_table import labels_table
from luab_fast.data.source import ImageList

# rows: a1 (n0), b2 (n1), c3 (n2), d4 (n1)
IMAGES = ImageList(files=("d/n0/a1.JPEG", "d/n1/b2.JPEG", "d/n2/c3.JPEG", "d/n1/d4.JPEG"),
                   labels=np.array([0, 1, 2, 1], np.int64), classes=("n0", "n1", "n2"))
POST = {"a1": (0.7, 0.2, 0.1), "b2": (0.1, 0.8, 0.1), "c3": (0, 0, 1), "d4": (0.25, 0.5, 0.25)}


def _csv(tmp_path, text: str):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def _posteriors_csv(tmp_path, columns: list[str], rows: dict = POST):
    """One column per class, named ``columns`` (class k's in columns[k]), written in shuffled order."""
    order = [2, 0, 1]
    return _csv(tmp_path, "task," + ",".join(columns[k] for k in order) + "\n"
                + "".join(f"{t}," + ",".join(str(p[k]) for k in order) + "\n" for t, p in rows.items()))


def _refused(path, *parts: str):
    """labels_table(path) raises a ValueError naming --labels PATH and each of ``parts`` (plain text)."""
    with pytest.raises(ValueError, match=re.escape(f"--labels {path}: ")) as e:
        labels_table(path, IMAGES)
    msg = str(e.value)
    for part in parts:
        assert part in msg, msg
    return msg


def test_hard_labels_by_index(tmp_path):
    path = _csv(tmp_path, "task,label\nd4,0\nc3,2\nzz,1\na1,1\nb2,0\n")  # any row order; extra tasks ignored
    t = labels_table(path, IMAGES)
    assert t.dtype == torch.int64 and t.tolist() == [1, 0, 2, 0]


def test_hard_labels_by_class_name(tmp_path):
    t = labels_table(_csv(tmp_path, "task,label\na1,n2\nb2,n0\nc3,n1\nd4,n2\n"), IMAGES)
    assert t.dtype == torch.int64 and t.tolist() == [2, 0, 1, 2]


def test_posteriors_by_class_name_columns_in_any_order(tmp_path):
    t = labels_table(_posteriors_csv(tmp_path, ["n0", "n1", "n2"]), IMAGES)
    assert t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor([POST[s] for s in IMAGES.stems], dtype=torch.float32))


@pytest.mark.parametrize("names", [["0", "1", "2"], ["p0", "p1", "p2"]])
def test_posteriors_by_numbered_columns(tmp_path, names):
    expect = torch.tensor([POST[s] for s in IMAGES.stems], dtype=torch.float32)
    torch.testing.assert_close(labels_table(_posteriors_csv(tmp_path, names), IMAGES), expect)
    # python -m luab_fast.annotate's posteriors_<method>.csv: task,0,1,...,K-1 in order
    in_order = _csv(tmp_path, "task,0,1,2\n" + "".join(f"{t},{a},{b},{c}\n" for t, (a, b, c) in POST.items()))
    torch.testing.assert_close(labels_table(in_order, IMAGES), expect)


def test_leading_zero_task_ids(tmp_path):
    images = ImageList(files=("d/n0/000123.JPEG", "d/n1/0042.JPEG"), labels=np.array([0, 1]), classes=("n0", "n1"))
    assert labels_table(_csv(tmp_path, "task,label\n0042,0\n000123,1\n"), images).tolist() == [1, 0]


def test_task_listed_twice(tmp_path):
    path = _csv(tmp_path, "task,label\na1,0\nb2,1\nb2,2\nc3,2\nd4,1\na1,0\nb2,1\n")
    _refused(path, "each task must be listed once, got 'a1' 2 times, 'b2' 3 times")


@pytest.mark.parametrize("value, shown", [("3.7", "got 3.7 for task b2"), ("", "got empty for task b2"),
                                          ("xyz", "got 'xyz' for task b2"), ("n7", "got 'n7' for task b2")])
def test_bad_hard_label(tmp_path, value, shown):
    """Non-integers (no truncation), empty labels and strings that are not class names of the data."""
    path = _csv(tmp_path, f"task,label\na1,{'n0' if value[:1].isalpha() else 0}\nb2,{value}\nc3,2\nd4,1\n")
    _refused(path, "label must be a class index 0..2 or a class name of the data", shown)


def test_unexpected_posterior_columns(tmp_path):
    _refused(_posteriors_csv(tmp_path, ["n0", "n1", "cat"]), "expected columns task,label or task,<one column per "
             "class", "got task,cat,n0,n1", "unexpected: cat", "missing: n2")
    _refused(_posteriors_csv(tmp_path, ["0", "1", "3"]), "in any order, or 0..C-1>, got task,3,0,1")
    _refused(_posteriors_csv(tmp_path, ["p0", "q1", "p2"]), "got task,p2,p0,q1")


@pytest.mark.parametrize("row, shown", [((0.5, float("nan"), 0.5), "n1=empty for task c3"),
                                        ((1.2, -0.2, 0), "n1=-0.2 for task c3"),
                                        ((0.5, "high", 0.5), "n1='high' for task c3"),
                                        ((0.5, float("inf"), 0.5), "n1=inf for task c3")])
def test_posterior_values_finite_and_not_negative(tmp_path, row, shown):
    rows = dict(POST, c3=tuple("" if isinstance(p, float) and np.isnan(p) else p for p in row))
    _refused(_posteriors_csv(tmp_path, ["n0", "n1", "n2"], rows), "posteriors must be finite numbers >= 0", shown)


def test_posterior_rows_sum_to_one(tmp_path):
    rows = dict(POST, b2=(0.1, 0.8, 0.2), d4=(0.1, 0.1, 0.1))
    _refused(_posteriors_csv(tmp_path, ["n0", "n1", "n2"], rows), "each posterior row must sum to 1 (within 1e-3)",
             "sum 1.1 for task b2", "sum 0.3 for task d4")
    rows = dict(POST, b2=(0.1, 0.8, 0.1004))  # rounding within 1e-3 is fine
    assert labels_table(_posteriors_csv(tmp_path, ["n0", "n1", "n2"], rows), IMAGES).shape == (4, 3)


def test_unreadable_files(tmp_path):
    _refused(_csv(tmp_path, ""), "expected columns task,label or task,<one column per class>, got an empty file")
    (tmp_path / "dir").mkdir()
    _refused(tmp_path / "dir", "expected a CSV file", "got a directory")
    _refused(_csv(tmp_path, "task,lbl\na1,0\nb2,1\nc3,2\nd4,1\n"), "expected columns task,label or task,<one column "
             "per class", "got task,lbl", "unexpected: lbl")
    _refused(_csv(tmp_path, "id,label\na1,0\n"), "got id,label")


def test_array_labels(tmp_path):
    assert labels_table(np.array([2, 0, 1, 1]), IMAGES).tolist() == [2, 0, 1, 1]
    assert labels_table(np.array([2.0, 0, 1, 1]), IMAGES).dtype == torch.int64
    with pytest.raises(ValueError, match=re.escape("labels: hard labels must be integers, got 3.7 for task b2")):
        labels_table(np.array([2, 3.7, 1, 1]), IMAGES)
    soft = np.array([POST[s] for s in IMAGES.stems], np.float32)
    torch.testing.assert_close(labels_table(soft, IMAGES), torch.from_numpy(soft))
    soft[3, 1] = np.nan
    with pytest.raises(ValueError, match=re.escape("labels: posteriors must be finite numbers >= 0, got nan for "
                                                   "task d4")):
        labels_table(soft, IMAGES)
    with pytest.raises(ValueError, match=re.escape("labels must be [N=4] classes or [N, C] posteriors by row")):
        labels_table(np.array([1, 2]), IMAGES)


def test_numbered_class_folders_take_labels_by_name(tmp_path):
    """Folders 0..10 sort as text (0, 1, 10, 2, ...): label 10 is folder "10", index 2, as the folder says."""
    classes = tuple(sorted(str(k) for k in range(11)))
    images = ImageList(tuple(f"d/{c}/img{c}.JPEG" for c in classes), np.arange(11, dtype=np.int64), classes)
    path = _csv(tmp_path, "task,label\n" + "".join(f"img{c},{c}\n" for c in classes))
    assert labels_table(path, images).tolist() == list(range(11))  # every image keeps its own folder
    with pytest.raises(ValueError, match=r"got 11 for task img1"):
        labels_table(_csv(tmp_path, "task,label\n" + "".join(f"img{c},{11 if c == '1' else c}\n" for c in classes)),
                     images)


def test_label_column_mixing_indices_and_names(tmp_path):
    assert labels_table(_csv(tmp_path, "task,label\na1,0\nb2,n1\nc3,2\nd4,n1\n"), IMAGES).tolist() == [0, 1, 2, 1]
