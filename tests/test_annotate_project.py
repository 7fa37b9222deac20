"""A real labelling project's rounds (luab_fast/annotate/project*.py): the replay against the simulation, the same
round twice, an interrupted round, ``status``, and outputs the trainer's ``--labels`` reader takes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from luab_fast import _cli
from luab_fast.aggregate.bayes import predefined_prior
from luab_fast.annotate import project as project_mod
from luab_fast.annotate.cli import main
from luab_fast.annotate.learner import LearnerConfig
from luab_fast.annotate.loop import run_method
from luab_fast.annotate.samplers import RandomSampler
from luab_fast.annotate.synthetic import synthetic_problem
from luab_fast.annotate.workers import ReplayWorkers, SimulatedWorkers, load_amt, structured_workers

N, K, W, SLOTS, HIT, BATCH, EPOCHS, SEED = 120, 4, 8, 10, 20, 60, 3, 5
IDS = [f"img{i:03d}" for i in range(N)]


@pytest.fixture(scope="module")
def team():
    """The demo's worker simulation (structured noise from the real AMT counts) answering every task 3 times, by 3
    distinct workers, collected pass by pass (so tasks first appear in the project's order); 10 gold tasks a class."""
    feats, truth = synthetic_problem(N, K, dim=16, separability=3.0, seed=1)
    amt = load_amt()
    workers = SimulatedWorkers(structured_workers(amt, list(amt.groups[0][:K]), n_workers=W, seed=0))
    rng = np.random.default_rng(7)
    picks = np.array([rng.choice(W, 3, replace=False) for _ in range(N)])
    pool = pd.concat([pd.DataFrame({"task": IDS, "worker": [f"w{w}" for w in picks[:, j]],
                                    "label": workers.label(np.arange(N), picks[:, j], truth, rng)})
                      for j in range(3)], ignore_index=True)
    gold = np.concatenate([rng.choice(np.flatnonzero(truth == k), 10, replace=False) for k in range(K)])
    return feats, truth, pool, gold


def inputs(tmp: Path, team) -> list[str]:
    feats, truth, _, gold = team
    pd.DataFrame({"task": IDS}).to_csv(tmp / "tasks.csv", index=False)
    np.save(tmp / "f.npy", feats)
    pd.DataFrame({"task": [IDS[i] for i in gold], "label": truth[gold]}).to_csv(tmp / "gold.csv", index=False)
    return ["--tasks", str(tmp / "tasks.csv"), "--features", str(tmp / "f.npy"), "--classes", str(K),
            "--gold", str(tmp / "gold.csv"), "--hit-size", str(HIT), "--batch", str(BATCH), "--workers", str(SLOTS),
            "--epochs", str(EPOCHS), "--seed", str(SEED)]


class Team:
    """Answers exactly the tasks ``next.csv`` asks for: each task's next answer from the pool, as
    ``ReplayWorkers.take`` hands them to the simulation."""

    def __init__(self, pool: pd.DataFrame) -> None:
        self.by_task = {t: g.reset_index(drop=True) for t, g in pool.groupby("task")}
        self.used = dict.fromkeys(self.by_task, 0)

    def answer(self, project: Path, out: Path) -> int:
        rows = []
        for t in pd.read_csv(project / "next.csv", dtype=str)["task"]:
            if self.used[t] < len(self.by_task[t]):
                rows.append(self.by_task[t].iloc[self.used[t]])
                self.used[t] += 1
        pd.DataFrame(rows, columns=["task", "worker", "label"]).to_csv(out, index=False)
        return len(rows)


def current(project: Path) -> Path:
    return project / (project / "CURRENT").read_text().strip()


def run_rounds(tmp: Path, team, method: str, rounds: int = 1000, extra: tuple = ()) -> tuple[Path, int]:
    proj = tmp / "proj"
    assert main(["next", "--project", str(proj), "--method", method, *extra] + inputs(tmp, team)) == 0
    crowd, r = Team(team[2]), 0
    while r < rounds:
        ans = tmp / f"answers_{r + 1}.csv"
        if crowd.answer(proj, ans) == 0:
            break
        r += 1
        assert main(["next", "--project", str(proj), "--labels", str(ans)]) == 0
    return proj, r


@pytest.mark.parametrize("method,start", [("ds_model", "warm"), ("lean", "warm"), ("lean", "cold"),
                                          ("efficient_annotation", "warm"), ("efficient_annotation", "cold")])
def test_replay_matches_simulation(tmp_path, team, method, start, capsys):
    """Driving ``next`` round by round ends with the simulation's labels and posteriors, bit for bit, the learner
    warm-started from the round before (the project's default, its weights saved in the round) or afresh."""
    feats, truth, pool, gold = team
    sampler = RandomSampler(N, SLOTS, hit_size=HIT, n_hits_per_step=BATCH // HIT)
    sim = run_method(method, feats, truth, ReplayWorkers(pool), sampler, predefined_prior(K, strength=10.0),
                     budget=len(pool), seed=SEED, learner_config=LearnerConfig(max_epochs=EPOCHS, warm_epochs=2),
                     prototype_idx=gold, learner_start=start)
    extra = ("--warm-epochs", "2") + (() if start == "warm" else ("--learner-start", "cold"))
    proj, rounds = run_rounds(tmp_path, team, method, extra=extra)
    assert (current(proj) / "learner.npz").exists() == (method != "ds_model")
    assert rounds == len(sim["curve"]) >= 3
    assert np.array_equal(np.load(current(proj) / "posteriors.npy"), sim["posteriors"])
    labels = pd.read_csv(proj / "labels.csv", dtype={"task": str})
    assert labels["task"].tolist() == IDS
    assert np.array_equal(labels["label"].to_numpy(), sim["posteriors"].argmax(1))
    hist = pd.DataFrame(json.loads((current(proj) / "state.json").read_text())["history"])
    assert hist["labels_per_image"].tolist() == pytest.approx([0.0] + [r.labels_per_image for r in sim["curve"]])
    assert hist["done_fraction"].tolist()[1:] == pytest.approx([r.done_fraction for r in sim["curve"]])


def test_outputs_and_trainer_reads_them(tmp_path, team, capsys):
    from luab_fast.data.labels_table import labels_table
    from luab_fast.data.source import ImageList

    proj, _ = run_rounds(tmp_path, team, "ds_model", rounds=2)
    out = capsys.readouterr().out
    assert "round 2" in out and "next: 60 tasks in 3 HITs" in out
    images = ImageList(files=tuple(f"/x/{t}.jpg" for t in IDS), labels=np.zeros(N, np.int64),
                       classes=tuple(str(k) for k in range(K)))
    hard = labels_table(proj / "labels.csv", images)
    soft = labels_table(proj / "posteriors.csv", images)
    assert hard.shape == (N,) and soft.shape == (N, K)
    assert np.array_equal(hard.numpy(), soft.numpy().argmax(1))
    nxt = pd.read_csv(proj / "next.csv", dtype={"task": str})
    assert len(nxt) == BATCH and nxt["hit"].tolist() == [h for h in range(3) for _ in range(HIT)]
    done = pd.read_csv(proj / "done.csv", dtype={"task": str})
    assert (done["risk"] < 0.1).all() and not set(done["task"]) & set(nxt["task"])  # done tasks are not resent
    workers = pd.read_csv(proj / "workers.csv", dtype={"worker": str})
    assert workers["labels"].sum() == 2 * BATCH and workers["estimated_accuracy"].between(0, 1).all()
    assert (proj / "round.png").read_bytes()[:4] == b"\x89PNG"
    assert os.path.samefile(proj / "labels.csv", current(proj) / "labels.csv")


def _snapshot(proj: Path) -> dict[str, bytes]:
    return {name: (proj / name).read_bytes() for name in project_mod.OUTPUTS} | {
        "CURRENT": (proj / "CURRENT").read_bytes()}


def test_same_round_twice_counts_labels_once(tmp_path, team, capsys):
    proj, _ = run_rounds(tmp_path, team, "ds_model", rounds=1)
    before = _snapshot(proj)
    copy = tmp_path / "same_answers_renamed.csv"
    copy.write_bytes((tmp_path / "answers_1.csv").read_bytes())
    for again in (tmp_path / "answers_1.csv", copy):
        assert main(["next", "--project", str(proj), "--labels", str(again)]) == 0
        out = capsys.readouterr().out
        assert "already ingested in round 1" in out and "unchanged" in out
        assert _snapshot(proj) == before
    # a new file repeating labels already in (one with another label): reported and skipped, never counted twice
    first = pd.read_csv(tmp_path / "answers_1.csv", dtype=str)
    changed = first.head(1).assign(label=str((int(first["label"].iat[0]) + 1) % K))
    third = Team(team[2]).by_task[first["task"].iat[0]].tail(1).astype(str)  # a worker new to that task
    pd.concat([first.head(5), changed, third]).to_csv(tmp_path / "mixed.csv", index=False)
    assert main(["next", "--project", str(proj), "--labels", str(tmp_path / "mixed.csv")]) == 0
    out = capsys.readouterr().out
    assert "mixed.csv (csv): 1 labels used; skipped 6 repeated (task, worker) pairs" in out
    assert np.load(current(proj) / "arrays.npz")["task"].size == BATCH + 1


@pytest.fixture(scope="module")
def clean(tmp_path_factory, team):
    """Two uninterrupted rounds: their outputs, and the second round's answers."""
    d = tmp_path_factory.mktemp("clean")
    proj, _ = run_rounds(d, team, "ds_model", rounds=2)
    return _snapshot(proj), d / "answers_2.csv"


@pytest.mark.parametrize("where", ["rename", "current", "publish"])
def test_interrupted_round_leaves_last_good_state(tmp_path, team, clean, monkeypatch, where, capsys):
    """A crash while a round is saved: the last good round stays current; rerunning gives the uninterrupted
    outputs (a clean project fed the same files)."""
    proj, _ = run_rounds(tmp_path, team, "ds_model", rounds=1)
    before = _snapshot(proj)
    want, ans = clean
    real_replace = os.replace

    def crash(*a, **k):
        raise OSError(28, "No space left on device")

    if where == "rename":
        monkeypatch.setattr(project_mod.os, "replace", lambda src, dst: crash() if Path(dst).name.startswith(
            "round-") else real_replace(src, dst))
    elif where == "current":
        monkeypatch.setattr(project_mod, "write_text", crash)
    else:
        monkeypatch.setattr(project_mod.Project, "publish", lambda self: crash())
    assert _cli.run(main, ["next", "--project", str(proj), "--labels", str(ans)]) == 1
    assert "no space left" in capsys.readouterr().err
    if where != "publish":  # the round never became current
        assert _snapshot(proj) == before
    assert not [p for p in proj.iterdir() if p.name.startswith(".") and p.name != ".lock"]  # no temporary left
    monkeypatch.undo()
    assert main(["next", "--project", str(proj), "--labels", str(ans)]) == 0
    assert _snapshot(proj) | {"round.png": b""} == want | {"round.png": b""}
    assert (proj / "CURRENT").read_text().strip() == "round-0002"


def test_status(tmp_path, team, capsys):
    proj, _ = run_rounds(tmp_path, team, "ds_model", rounds=2)
    capsys.readouterr()
    assert main(["status", "--project", str(proj)]) == 0
    out = capsys.readouterr().out
    assert f"{N} tasks, {K} classes, method ds_model, round 2" in out
    assert "labels 120 (1.00 per image) from" in out
    table = out.splitlines()[-3:]
    assert [int(line.split()[0]) for line in table] == [0, 1, 2]
    assert _cli.run(main, ["status", "--project", str(tmp_path / "nothing")]) == 2
    assert "not a labelling project" in capsys.readouterr().err


def test_one_next_at_a_time(tmp_path, team, capsys):
    import fcntl

    proj, _ = run_rounds(tmp_path, team, "ds_model", rounds=0)
    with open(proj / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as a `next` still running would hold it
        assert _cli.run(main, ["next", "--project", str(proj)]) == 2
    assert "another `next` is running on it" in capsys.readouterr().err
    assert main(["next", "--project", str(proj)]) == 0


def test_project_saved_before_learner_start_goes_on_cold(tmp_path, team, capsys):
    """A project file without learner_start (written before warm starts existed) ran its learner afresh each round:
    loaded, it goes on that way rather than switching under its user."""
    proj, _ = run_rounds(tmp_path, team, "efficient_annotation", rounds=1)
    meta_path = proj / project_mod.PROJECT_FILE
    meta = json.loads(meta_path.read_text())
    assert meta["settings"]["learner_start"] == "warm"  # the default of a new project
    for key in ("learner_start", "warm_epochs"):
        del meta["settings"][key]
    meta_path.write_text(json.dumps(meta))
    loaded = project_mod.Project.load(proj)
    assert (loaded.settings.learner_start, loaded.settings.warm_epochs) == ("cold", 20)
