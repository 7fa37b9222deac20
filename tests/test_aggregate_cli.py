"""python -m luab_fast.aggregate: the demo and a real crowd CSV with truth, plot and output file."""

from __future__ import annotations

import pandas as pd
import pytest

from luab_fast._cli import DataError
from luab_fast.aggregate.cli import main


def test_demo_runs_every_method_and_beats_chance(capsys):
    assert main(["--demo-tasks", "2000", "--demo-workers", "50", "--demo-classes", "10"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in
            (["mv"], ["ds"], ["onecoin"], ["bayes"])}
    assert set(rows) == {"mv", "ds", "onecoin", "bayes"}, out
    for name, cols in rows.items():
        assert float(cols[1]) > 0.8, f"{name} accuracy {cols[1]} on an easy synthetic crowd"


def test_real_csv_with_truth_plot_and_out(shared_data, tmp_path, capsys):
    root = shared_data / "crowd" / "dog"
    png, csv = tmp_path / "workers.png", tmp_path / "labels.csv"
    code = main([str(root / "label.csv"), "--truth", str(root / "truth.csv"), "--method", "ds",
                 "--plot", str(png), "--out", str(csv), "--workers", "3"])
    assert code == 0
    out = capsys.readouterr().out
    acc = float(out.split("accuracy ")[1].split()[0])
    assert acc > 0.8, out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    labels = pd.read_csv(csv)
    assert list(labels.columns[:2]) == ["task", "label"] and len(labels) == 807
    assert not list(tmp_path.glob("*.tmp")), "no half-written files left behind"


def test_every_model_on_a_real_crowd_one_column_each(shared_data, tmp_path, capsys):
    """--method takes every model (luab_fast.aggregate's and crowd-kit's); several write one label column each,
    equal to what luab_fast.crowdkit's class gives on the same frame."""
    from luab_fast import crowdkit
    from luab_fast.aggregate.cli import ALL_METHODS, read_labels

    root = shared_data / "crowd" / "bluebird"
    csv = tmp_path / "all.csv"
    methods = [arg for m in ALL_METHODS for arg in ("--method", m)]
    assert main([str(root / "label.csv"), "--truth", str(root / "truth.csv"), *methods, "--out", str(csv)]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(csv).set_index("task")
    assert list(table.columns) == list(ALL_METHODS) and len(table) == 108
    for m in ALL_METHODS:
        acc = float(out.split(f"[{m}]")[1].split("accuracy ")[1].split()[0])
        assert acc > 0.55, f"{m}: accuracy {acc} on bluebird\n{out}"
    glad = crowdkit.GLAD().fit_predict(read_labels(root / "label.csv"))
    assert (table["glad"] == glad.reindex(table.index)).all()


def test_gold_majority_vote_needs_truth(shared_data):
    from luab_fast._cli import UsageError

    with pytest.raises(UsageError, match="--method gold-mv is fitted on gold labels: give them with --truth"):
        main([str(shared_data / "crowd" / "bluebird" / "label.csv"), "--method", "gold-mv"])


def test_missing_columns_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="needs columns task"):  # exit status 1 through _cli.run
        main([str(bad)])
