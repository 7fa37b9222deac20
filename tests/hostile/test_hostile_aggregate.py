"""Hostile input to ``python -m luab_fast.aggregate`` and to the estimators' Python API (issue 17).

Every bad input ends in one ``error:`` line naming the argument or file, exit 2 (argument) or 1 (data), no
traceback; the user's files (a results CSV from an earlier run, their own ``res.csv.tmp``) come out byte for
byte as they went in and nothing temporary is left. The API raises one ValueError naming the argument.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luab_fast.aggregate import BayesAggregator, DawidSkene, MajorityVote, OneCoinDawidSkene, _checks, make_crowd
from luab_fast.aggregate.cli import read_labels

from .conftest import leftovers, run_process, run_python, snapshot

OLD_RESULTS = "task,label,0,1,2\n0,1,0.1,0.8,0.1\n"
USERS_TMP = "the user's own notes, not ours to touch\n"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder as a user has it: a crowd CSV, its truth, an earlier run's res.csv and their own res.csv.tmp."""
    crowd = make_crowd(40, 8, 3, 3, seed=2)
    crowd.frame().to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame({"task": np.arange(40), "truth": crowd.truth}).to_csv(tmp_path / "truth.csv", index=False)
    (tmp_path / "res.csv").write_text(OLD_RESULTS)
    (tmp_path / "res.csv.tmp").write_text(USERS_TMP)
    (tmp_path / "folder").mkdir()
    return tmp_path


def _write(path: Path, content: str | bytes) -> None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


# -- the CLI: one message, the right status, nothing lost or left behind -----------------------------------
# case id -> (files to write {name: content}, arguments ({d} = the folder), exit status, fragments of the message)
CLI_CASES = {
    "empty labels file": ({"bad.csv": ""}, ["{d}/bad.csv"], 1, ["bad.csv", "is empty"]),
    "header only": ({"bad.csv": "task,worker,label\n"}, ["{d}/bad.csv"], 1, ["bad.csv", "no rows"]),
    "missing column": ({"bad.csv": "task,label\n1,2\n"}, ["{d}/bad.csv"], 1, ["bad.csv", "needs columns", "worker"]),
    "ragged row": ({"bad.csv": "task,worker,label\n1,2,3\n4,5,6,7,8\n"}, ["{d}/bad.csv"], 1,
                   ["bad.csv", "well-formed csv"]),
    "binary file": ({"bad.csv": b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01" * 20}, ["{d}/bad.csv"], 1, ["bad.csv", "utf-8"]),
    "empty label cell": ({"bad.csv": "task,worker,label\n1,1,0\n1,2,1\n2,1,\n"}, ["{d}/bad.csv"], 1,
                         ["bad.csv", "row 3", "no label"]),
    "empty worker cells": ({"bad.csv": "item,worker,label\n1,,0\n1,,1\n"}, ["{d}/bad.csv"], 1,
                           ["rows 1, 2", "no worker"]),
    "empty item cell": ({"bad.csv": "item,worker,label\n1,1,0\n,2,1\n"}, ["{d}/bad.csv"], 1, ["row 2", "no item"]),
    "labels path missing": ({}, ["{d}/nope.csv"], 2, ["labels", "nope.csv", "no such file"]),
    "labels path a folder": ({}, ["{d}/folder"], 2, ["labels", "folder", "is a folder"]),
    "truth empty name": ({}, ["{d}/labels.csv", "--truth", ""], 2, ["--truth", "expected a csv file name"]),
    "truth missing": ({}, ["{d}/labels.csv", "--truth", "{d}/nope.csv"], 2, ["--truth", "no such file"]),
    "truth label text in one row": ({"t.csv": "task,truth\n0,1\n1,x\n2,0\n"},
                                    ["{d}/labels.csv", "--truth", "{d}/t.csv"], 1,
                                    ["--truth", "t.csv", "row 2", "'x'", "expected a number"]),
    "truth task text": ({"t.csv": "task,truth\n0,1\nseven,1\n"}, ["{d}/labels.csv", "--truth", "{d}/t.csv"], 1,
                        ["--truth", "row 2", "task 'seven'"]),
    "truth empty cell": ({"t.csv": "task,truth\n0,1\n1,\n"}, ["{d}/labels.csv", "--truth", "{d}/t.csv"], 1,
                         ["--truth", "row 2", "no label"]),
    "truth contradicts itself": ({"t.csv": "task,truth\n0,1\n3,2\n0,2\n"}, ["{d}/labels.csv", "--truth", "{d}/t.csv"],
                                 1, ["--truth", "task 0", "rows 1, 3", "different truths"]),
    "truth shares no task": ({"t.csv": "task,truth\n1000,1\n1001,2\n"}, ["{d}/labels.csv", "--truth", "{d}/t.csv"], 1,
                             ["--truth", "none of its 2 tasks"]),
    "truth indices, crowd names": ({"t.csv": "task,truth\n0,1\n1,0\n", "n.csv": "task,worker,label\n0,1,cat\n"},
                                   ["{d}/n.csv", "--truth", "{d}/t.csv"], 1, ["none of its labels", "'1' there"]),
    "truth one column": ({"t.csv": "task\n0\n"}, ["{d}/labels.csv", "--truth", "{d}/t.csv"], 1, ["two columns"]),
    "threads 0": ({}, ["{d}/labels.csv", "--threads", "0"], 2, ["--threads", "1..1024", "'0'"]),
    "threads 100000": ({}, ["{d}/labels.csv", "--threads", "100000"], 2, ["--threads", "1..1024", "'100000'"]),
    "threads text": ({}, ["{d}/labels.csv", "--threads", "all"], 2, ["--threads", "'all'"]),
    "workers negative": ({}, ["{d}/labels.csv", "--workers", "-1"], 2, ["--workers", ">= 0"]),
    "out folder missing": ({}, ["{d}/labels.csv", "--out", "{d}/no/res.csv"], 2, ["--out", "does not exist"]),
    "out is a folder": ({}, ["{d}/labels.csv", "--out", "{d}/folder"], 2, ["--out", "is a folder"]),
    "out replaces the labels": ({}, ["{d}/labels.csv", "--out", "{d}/labels.csv"], 2, ["--out", "labels file"]),
    "out and plot one file": ({}, ["{d}/labels.csv", "--out", "{d}/w.png", "--plot", "{d}/w.png"], 2,
                              ["--plot", "is also --out"]),
    "plot format unknown": ({}, ["{d}/labels.csv", "--plot", "{d}/w.xyz"], 2, ["--plot", "'.xyz'", ".png"]),
    "out in the demo": ({}, ["--out", "{d}/res.csv"], 2, ["--out", "needs a labels csv"]),
    "demo labels > workers": ({}, ["--demo-workers", "3", "--demo-labels", "5"], 2, ["--demo-labels", "at most"]),
    "seed negative": ({}, ["--seed", "-1"], 2, ["--seed", ">= 0"]),
    "method unknown": ({}, ["{d}/labels.csv", "--method", "em"], 2, ["--method", "'em'"]),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_with_one_message_and_touches_nothing(cli, work, case):
    files, args, status, fragments = CLI_CASES[case]
    for name, content in files.items():
        _write(work / name, content)
    before, tmps = snapshot(work), leftovers(work)
    cli("aggregate", *[a.format(d=work) for a in args]).failed_with(status, *fragments)
    assert snapshot(work) == before, "a failed run changed or removed a file"
    assert leftovers(work) == tmps == ["res.csv.tmp"]


def test_cli_as_a_process_keeps_the_users_tmp_and_refuses_without_traceback(work):
    """The reported case end to end, through ``__main__``: res.csv.tmp was overwritten, then deleted."""
    run_process("aggregate", work / "labels.csv", "--out", work / "res.csv", "--method", "mv").ok()
    assert (work / "res.csv.tmp").read_text() == USERS_TMP and leftovers(work) == ["res.csv.tmp"]
    before = snapshot(work)
    refused = run_process("aggregate", work / "labels.csv", "--out", work / "res.csv", "--threads", "0")
    refused.failed_with(2, "--threads")
    assert snapshot(work) == before


def test_cli_full_disk_leaves_old_results_and_no_temporary(cli, work, monkeypatch):
    def full(self, path, *a, **k):
        Path(path).write_text("half a ")  # what a writer manages before the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    before = snapshot(work)
    cli("aggregate", work / "labels.csv", "--out", work / "res.csv").failed_with(1, "--out", "no space left",
                                                                                 "res.csv")
    assert snapshot(work) == before and leftovers(work) == ["res.csv.tmp"]


def test_cli_full_disk_while_plotting(cli, work, monkeypatch):
    from matplotlib.figure import Figure

    def full(self, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    (work / "w.png").write_bytes(b"\x89PNG an earlier plot")
    before = snapshot(work)
    cli("aggregate", work / "labels.csv", "--plot", work / "w.png").failed_with(1, "--plot", "no space left", "w.png")
    assert snapshot(work) == before and leftovers(work) == ["res.csv.tmp"]


def test_cli_free_text_labels_too_many_classes_for_memory(cli, work, monkeypatch):
    """A label column of free text makes every answer a class: refused with the sizes, not a bad_alloc."""
    monkeypatch.setattr(_checks, "physical_memory", lambda: 16 << 20)
    n = 300
    pd.DataFrame({"task": np.arange(n) % 15, "worker": np.arange(n) % 30,
                  "label": [f"answer {i}" for i in range(n)]}).to_csv(work / "free.csv", index=False)
    before = snapshot(work)
    cli("aggregate", work / "free.csv", "--out", work / "res.csv").failed_with(1, "free.csv", "300 classes",
                                                                               "would need", "fewer classes")
    assert snapshot(work) == before


def test_cli_keeps_the_users_tmp_file_and_writes_with_the_umask_mode(cli, work):
    old = os.umask(0o027)
    try:
        cli("aggregate", work / "labels.csv", "--out", work / "res.csv").ok()
    finally:
        os.umask(old)
    assert (work / "res.csv.tmp").read_text() == USERS_TMP
    assert (work / "res.csv").stat().st_mode & 0o777 == 0o640
    assert pd.read_csv(work / "res.csv").shape == (40, 5) and leftovers(work) == ["res.csv.tmp"]


def test_cli_several_methods_write_one_column_each_and_say_so(cli, work):
    out = cli("aggregate", work / "labels.csv", "--method", "ds", "--method", "mv", "--method", "ds",
              "--method", "glad", "--out", work / "res.csv").ok().out
    assert out.count("[ds]") == 1 and out.count("[mv]") == 1, "a method asked twice runs once"
    assert f"wrote the labels of ds, mv, glad (a column each) to {work / 'res.csv'}" in out
    table = pd.read_csv(work / "res.csv")
    assert list(table.columns) == ["task", "ds", "mv", "glad"]
    for m in ("ds", "mv", "glad"):  # each column is what that method alone writes as its label
        cli("aggregate", work / "labels.csv", "--method", m, "--out", work / f"one-{m}.csv").ok()
        one = pd.read_csv(work / f"one-{m}.csv").set_index("task")["label"]
        assert table.set_index("task")[m].equals(one.reindex(table["task"]).rename(m))
    assert leftovers(work) == ["res.csv.tmp"]


def test_cli_truth_compared_in_the_crowds_type(cli, work):
    """Text labels against text truth, and numeric truth written as "3.0": accuracy counted, not 0.0."""
    crowd = pd.read_csv(work / "labels.csv")
    names = np.array(["cat", "dog", "fox"])
    crowd.assign(label=names[crowd["label"]]).to_csv(work / "text.csv", index=False)
    truth = pd.read_csv(work / "truth.csv")
    truth.assign(truth=names[truth["truth"]]).to_csv(work / "text_truth.csv", index=False)
    (work / "float_truth.csv").write_text("task,truth\n" + "".join(f"{t},{v}.0\n" for t, v in truth.to_numpy()))

    def acc(labels, t):
        out = cli("aggregate", work / labels, "--truth", work / t, "--method", "mv").ok().out
        return float(out.split("accuracy ")[1].split()[0])

    ref = acc("labels.csv", "truth.csv")
    assert ref > 0.6 and acc("text.csv", "text_truth.csv") == ref and acc("labels.csv", "float_truth.csv") == ref


# -- a fuzz of the CSV readers ----------------------------------------------------------------------------------
NUMBERS = st.integers(-1, 4).map(str)
ODD_CELLS = st.one_of(st.sampled_from(["", "x", "1.5", "nan", "inf", '"2"', " 3", "True", "1e400", "-0"]),
                      st.text(st.characters(blacklist_categories=("Cs",)), max_size=4))
CELLS = st.one_of(*[NUMBERS] * 7, ODD_CELLS)  # mostly valid, so that the happy path is fuzzed too
HEADERS = st.one_of(st.permutations(["task", "worker", "label"]), st.permutations(["task", "worker", "label"]),
                    st.permutations(["item", "worker", "label", "x"]),
                    st.lists(st.sampled_from(["task", "item", "worker", "label", "x", ""]), min_size=1, max_size=4))


@st.composite
def csv_text(draw, max_rows: int = 8) -> str:
    header = draw(HEADERS)
    n = len(header)
    width = st.sampled_from([n] * 12 + [max(n - 1, 0), n + 1])  # now and then a short or a long row
    rows = [draw(st.lists(CELLS, min_size=n, max_size=n)) for n in draw(st.lists(width, min_size=1, max_size=max_rows))]
    return "\n".join([",".join(header)] + [",".join(r) for r in rows]) + draw(st.sampled_from(["", "\n"]))


def _fuzz_one(cli, tmp_path: Path, labels: bytes, truth: bytes | None) -> None:
    _write(tmp_path / "in.csv", labels)
    args = [tmp_path / "in.csv", "--out", tmp_path / "res.csv", "--method", "ds", "--method", "mv"]
    if truth is not None:
        _write(tmp_path / "t.csv", truth)
        args += ["--truth", tmp_path / "t.csv"]
    r = cli("aggregate", *args)
    assert "Traceback" not in r.err and "this is a bug" not in r.err, r.err
    if r.status == 0:  # a valid aggregate: one row per task, each a distribution
        res = pd.read_csv(tmp_path / "res.csv")
        assert list(res.columns) == ["task", "ds", "mv"]
        assert len(res) == read_labels(tmp_path / "in.csv")["task"].nunique()
    else:  # every argument is valid: whatever is wrong is in the data
        r.failed_with(1)
    assert leftovers(tmp_path) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.one_of(csv_text().map(str.encode), csv_text().map(str.encode), st.binary(max_size=64)))
def test_fuzz_labels_csv_aggregates_or_fails_with_one_line(cli, tmp_path, labels):
    _fuzz_one(cli, tmp_path, labels, None)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(truth=st.one_of(csv_text(3).map(str.encode), csv_text(3).map(str.encode), st.binary(max_size=32)))
def test_fuzz_truth_csv_counts_or_fails_with_one_line(cli, tmp_path, truth):
    _fuzz_one(cli, tmp_path, b"task,worker,label\n0,0,1\n0,1,1\n1,0,2\n1,1,0\n2,1,1\n", truth)


# -- the Python API ------------------------------------------------------------------------------------------
DS, OC, BA, MV = DawidSkene, OneCoinDawidSkene, BayesAggregator, MajorityVote
CROWD = make_crowd(30, 6, 3, 3, seed=1)
FRAME = CROWD.frame()
# case id -> (estimator, constructor kwargs, data, fit kwargs, regex the ValueError must match)
API_CASES = {
    "n_threads True": (DS, {"n_threads": True}, FRAME, {}, r"^n_threads must be a positive integer up to 1024"),
    "n_threads 2**40": (MV, {"n_threads": 2 ** 40}, FRAME, {}, r"^n_threads .* got 1099511627776"),
    "DS prior NaN": (DS, {"prior": float("nan")}, FRAME, {}, r"^prior and prior_diag must be >= 0 and finite"),
    "DS prior_diag inf": (DS, {"prior_diag": float("inf")}, FRAME, {}, r"prior_diag=inf"),
    "DS prior_diag None": (DS, {"prior_diag": None}, FRAME, {}, r"prior_diag=None"),
    "DS prior text": (DS, {"prior": "strong"}, FRAME, {}, r"^prior must be a float, .* got 'strong'"),
    "DS n_iter True": (DS, {"n_iter": True}, FRAME, {}, r"^n_iter must be an integer >= 0, got True"),
    "DS precision case": (DS, {"precision": "FLOAT32"}, FRAME, {}, r"^precision must be 'float64' or 'float32'"),
    "one-coin prior text": (OC, {"prior": "ab"}, FRAME, {}, r"^prior must be \(right, wrong\)"),
    "Bayes strength NaN": (BA, {"strength": float("nan")}, FRAME, {}, r"^strength must be a finite number >= 0"),
    "Bayes strength None": (BA, {"strength": None}, FRAME, {}, r"^strength must be"),
    "Bayes global_cm NaN": (BA, {"global_cm": np.full((3, 3), np.nan)}, FRAME, {}, r"^global_cm must hold finite"),
    "Bayes max_iter True": (BA, {"max_iter": True}, FRAME, {}, r"^max_iter must be an integer >= 0"),
    "Bayes epsilon True": (BA, {"likelihood_epsilon": True}, FRAME, {}, r"^likelihood_epsilon must be"),
    "MV default_skill NaN": (MV, {"default_skill": float("nan")}, FRAME, {"skills": pd.Series({0: 0.9})},
                             r"^default_skill must be a finite number"),
    "MV negative skill": (MV, {}, FRAME, {"skills": pd.Series(np.r_[-0.5, np.ones(5)])},
                          r"^skills must be finite numbers >= 0, got \[-0.5\] for workers \[0\]"),
    "MV infinite skill": (MV, {}, FRAME, {"skills": np.r_[np.inf, np.ones(5)]}, r"^skills must be finite"),
    "MV skills text": (MV, {}, FRAME, {"skills": "high"}, r"^skills must be a number >= 0 per worker"),
    "n_classes True": (DS, {}, CROWD.arrays, {"n_classes": True}, r"^n_classes must be a positive integer"),
    "n_tasks text": (DS, {}, CROWD.arrays, {"n_tasks": "40"}, r"^n_tasks must be a positive integer, got '40'"),
    "n_workers negative": (MV, {}, CROWD.arrays, {"n_workers": -1}, r"^n_workers must be a positive integer"),
    "n_tasks absurd": (OC, {}, CROWD.arrays, {"n_tasks": 10 ** 15}, r"tasks .* would need .* PiB"),
    "n_classes past the engine": (MV, {}, CROWD.arrays, {"n_classes": 70_000}, r"^n_classes: got 70,000 classes"),
    "bool task array": (BA, {}, (CROWD.task > 3, CROWD.worker, CROWD.label), {}, r"^task must be an integer array"),
    "bool labels with n_classes": (DS, {}, FRAME.assign(label=FRAME.label > 0), {"n_classes": 2},
                                   r"^label must be an integer array, got dtype bool"),
    "two label columns": (MV, {}, pd.concat([FRAME, FRAME[["label"]]], axis=1), {}, r"\['label'\] more than once"),
    "task_prior text": (DS, {}, FRAME, {"task_prior": "uniform"}, r"^task_prior must be a \[tasks, classes\]"),
}


@pytest.mark.parametrize("case", API_CASES)
def test_api_refuses_with_a_value_error_naming_the_argument(case):
    cls, init, data, fit_kwargs, pattern = API_CASES[case]
    with pytest.raises(ValueError, match=pattern):
        cls(**init).fit(data, **fit_kwargs)


def test_api_n_threads_past_the_cap_is_refused_before_openmp():
    """It crashed the interpreter (OpenMP starting 100,000 threads): run where a crash fails only this test."""
    r = run_python("from luab_fast.aggregate import DawidSkene, make_crowd\n"
                   "try:\n    DawidSkene(n_threads=100000).fit(make_crowd(20, 5, 2, 3).frame())\n"
                   "except ValueError as e:\n    print('refused:', e)\n")
    assert r.status == 0 and "refused: n_threads must be a positive integer up to 1024" in r.out, r.err


@pytest.mark.parametrize("cls", [DS, BA])
def test_api_too_many_classes_for_memory_is_refused_by_name(cls, monkeypatch):
    # a machine of 16 MiB, so that the tables (~100 MiB) stay harmless should the check ever be lost
    monkeypatch.setattr(_checks, "physical_memory", lambda: 16 << 20)
    data = pd.DataFrame({"task": np.arange(400) % 20, "worker": np.arange(400) % 40, "label": np.arange(400)})
    with pytest.raises(ValueError, match=r"400 classes \(distinct labels\).* would need .* MiB.*fewer classes"):
        cls().fit(data)
    assert OC().fit(data).labels_.size == 20, "one-coin holds no [W, K, K] table: it still fits"


@pytest.mark.parametrize("method", [DS, OC, BA, MV])
def test_api_refused_partial_fit_leaves_the_previous_fit_whole(method):
    model = method().fit(FRAME)
    before = model.labels_.copy()
    bad = {"task_prior": np.ones((5, 3))} if method in (DS, OC) else (
        {"learner_prob": np.ones((5, 3))} if method is BA else {"skills": np.ones(2)})
    with pytest.raises(ValueError):
        model.partial_fit(pd.DataFrame({"task": [100, 101], "worker": [0, 1], "label": [0, 1]}), **bad)
    pd.testing.assert_series_equal(model.labels_, before)
    assert model.posteriors_.shape == (30, 3) and len(model.task_ids_) == 30


@pytest.mark.parametrize("method", [DS, OC, BA, MV])
def test_api_single_worker_gives_that_workers_labels(method):
    one = FRAME[FRAME.worker == 2].drop_duplicates("task")
    got = method().fit(one).labels_
    assert got.to_dict() == dict(zip(one.task, one.label))

