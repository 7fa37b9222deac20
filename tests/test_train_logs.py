"""The logs beside log.jsonl (issue 20): timm's summary.csv per trained model (its columns, the splits after the
first, a resumed run adding no row twice, a fresh run replacing an earlier one's), and the TensorBoard / wandb
scalars — through stand-ins for SummaryWriter and wandb always, through the real packages where installed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from luab_fast.train import summary_logs
from luab_fast.train.run import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def _train(demo, out, *extra):
    return main(["--data", str(demo.train), "--out", str(out), "--device", "cpu", "--backend", "torchvision",
                 "--batch-size", "16", "--image-size", "32", "--no-compare", "--byproducts", str(demo.store),
                 "--val-data", f"iid={demo.iid}", f"ood={demo.ood}", *extra])


def _rows(out: Path, model: str = "luab") -> list[dict[str, str]]:
    with open(out / model / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_summary_csv_has_timms_columns_one_row_per_epoch(demo, tmp_path):
    out = tmp_path / "run"
    assert _train(demo, out, "--epochs", "2") == 0
    with open(out / "luab" / "summary.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "ood_top1", "ood_top5", "lr"]
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    log = _log(out)
    for row in rows:
        epoch = int(row["epoch"])
        steps = [r for r in log if "loss" in r and r["epoch"] == epoch - 1]
        assert float(row["train_loss"]) == pytest.approx(sum(r["loss"] for r in steps) / len(steps))
        assert float(row["lr"]) == pytest.approx(steps[-1]["lr"])
        evals = {k: v for r in log if "loss" not in r and r["epoch"] == epoch for k, v in r.items()}
        assert float(row["eval_top1"]) == pytest.approx(evals["iid_top1"])  # the first split: eval_*
        assert float(row["ood_top1"]) == pytest.approx(evals["ood_top1"])
        assert 0 <= float(row["eval_top1"]) <= float(row["eval_top5"]) <= 1
        assert 0 < float(row["eval_loss"]) < 50  # the mean cross-entropy of the first split's images


def test_resumed_run_writes_no_epoch_twice(demo, tmp_path):
    out = tmp_path / "run"
    assert _train(demo, out, "--epochs", "1") == 0
    first = _rows(out)
    assert [r["epoch"] for r in first] == ["1"]
    # stopped within epoch 2 (12 steps an epoch): no row for it yet
    assert _train(demo, out, "--epochs", "3", "--max-steps", "18", "--resume") == 0
    assert [r["epoch"] for r in _rows(out)] == ["1"]
    assert _train(demo, out, "--epochs", "3", "--resume") == 0
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0] == first[0]  # the earlier epoch's row kept as it was
    # a resumed run that has nothing left to train leaves the file alone
    assert _train(demo, out, "--epochs", "3", "--resume") == 0
    assert _rows(out) == rows
    # a fresh run into the same --out replaces the earlier run's rows
    assert _train(demo, out, "--epochs", "1") == 0
    assert [r["epoch"] for r in _rows(out)] == ["1"]


def test_summary_csv_replaces_a_row_of_the_same_or_a_later_epoch(tmp_path):
    path = tmp_path / "summary.csv"
    s = summary_logs.SummaryCsv(path, fresh=True)
    for e in (1, 2, 3):
        s.write({"epoch": e, "train_loss": e, "lr": 0.1})
    s = summary_logs.SummaryCsv(path, fresh=False)  # resumed from epoch 1's checkpoint
    s.write({"epoch": 2, "train_loss": 20, "eval_top1": 0.5, "lr": 0.1})
    rows = list(csv.DictReader(open(path, newline="")))
    assert [(r["epoch"], r["train_loss"], r["eval_top1"]) for r in rows] == [("1", "1", ""), ("2", "20", "0.5")]
    assert not list(tmp_path.glob(".*"))  # no temporary file left


class _FakeWriter:
    made: list["_FakeWriter"] = []

    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        _FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        assert isinstance(value, float) and isinstance(step, int)
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


def test_log_tensorboard_scalars_per_step_and_epoch(demo, tmp_path, monkeypatch):
    _FakeWriter.made = []
    monkeypatch.setattr(summary_logs, "_import_summary_writer", lambda: _FakeWriter)
    out = tmp_path / "run"
    assert _train(demo, out, "--epochs", "2", "--log-tensorboard") == 0
    (w,) = _FakeWriter.made
    assert w.log_dir == str(out / "luab" / "tb") and w.closed
    tags = {t for t, _, _ in w.scalars}
    assert {"train/loss", "train/lr", "train/heat", "eval/iid_top1", "eval/iid_top5", "eval/ood_top1"} <= tags
    log = _log(out)
    steps = [(r["step"], r["loss"]) for r in log if "loss" in r]
    assert [(s, v) for t, v, s in w.scalars if t == "train/loss"] == steps
    assert [s for t, _, s in w.scalars if t == "eval/iid_top1"] == [12, 24]


def test_log_tensorboard_writes_event_files(demo, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert _train(demo, out, "--max-steps", "3", "--log-tensorboard") == 0
    assert list((out / "luab" / "tb").glob("events.out.tfevents.*"))


class _FakeWandb:
    def __init__(self):
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kw):
        self.inits.append(kw)
        return self

    def log(self, scalars, step):
        self.logged.append((dict(scalars), step))

    def finish(self):
        self.finished += 1


def test_log_wandb_through_a_stand_in(demo, tmp_path, monkeypatch):
    fake = _FakeWandb()
    monkeypatch.setattr(summary_logs, "_import_wandb", lambda: fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    assert _train(demo, out, "--epochs", "1", "--log-wandb", "--wandb-project", "p") == 0
    (init,) = fake.inits
    assert init["project"] == "p" and init["dir"] == str(out) and init["mode"] == "offline"
    assert init["config"]["lr"] == 2e-3 and init["config"]["trained_model"] == "luab"
    assert fake.finished == 1
    assert len([1 for s, _ in fake.logged if "train/loss" in s]) == 12
    assert [step for s, step in fake.logged if "eval/iid_top1" in s] == [12]


def test_log_wandb_offline(demo, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert _train(demo, out, "--max-steps", "3", "--log-wandb") == 0
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    # the offline record log (protobuf records, keys stored as plain strings): the history rows and the config
    # this run sent, not just an empty run directory
    records = run_file.read_bytes()
    assert records.count(b"train/loss") >= 3 and b"trained_model" in records
