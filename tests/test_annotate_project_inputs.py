"""A labelling project's inputs (luab_fast/annotate/project_io.py, project_cli.py): the MTurk and Toloka exports,
column mapping, class names, and hostile inputs — each refused with a clear message, or reported and skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from luab_fast import _cli
from luab_fast.annotate.cli import main

N, K = 40, 3
IDS = [f"im{i:02d}" for i in range(N)]
NAMES = ["cat", "dog", "fox"]


def create(tmp: Path, *extra: str, method: str = "ds_model") -> Path:
    pd.DataFrame({"task": IDS}).to_csv(tmp / "tasks.csv", index=False)
    (tmp / "names.txt").write_text("\n".join(NAMES) + "\n")
    proj = tmp / "proj"
    argv = ["next", "--project", str(proj), "--tasks", str(tmp / "tasks.csv"), "--class-names",
            str(tmp / "names.txt"), "--method", method, "--hit-size", "10", "--batch", "20", "--workers", "5",
            *extra]
    assert main(argv) == 0
    return proj


def ingest(proj: Path, path: Path, *extra: str) -> int:
    return _cli.run(main, ["next", "--project", str(proj), "--labels", str(path), *extra])


def n_labels(proj: Path) -> int:
    return int(np.load(proj / (proj / "CURRENT").read_text().strip() / "arrays.npz")["task"].size)


def test_mturk_batch_results(tmp_path, capsys):
    proj = create(tmp_path)
    rows = [{"HITId": f"H{i}", "AssignmentId": f"A{i}", "WorkerId": f"AW{i % 3}",
             "AssignmentStatus": "Rejected" if i == 4 else "Approved", "Input.image_url": IDS[i],
             "Answer.category": NAMES[i % K], "Approve": "", "Reject": ""} for i in range(10)]
    pd.DataFrame(rows).to_csv(tmp_path / "Batch_123_batch_results.csv", index=False)
    assert ingest(proj, tmp_path / "Batch_123_batch_results.csv") == 0
    out = capsys.readouterr().out
    assert "(mturk): 9 labels used; skipped 1 rejected assignments" in out
    labels = pd.read_csv(proj / "labels.csv", dtype=str).set_index("task")["label"]
    assert labels[IDS[0]] == "cat" and labels[IDS[1]] == "dog"  # labels written as the class names
    assert pd.read_csv(proj / "workers.csv", dtype={"worker": str})["worker"].tolist() == ["AW0", "AW1", "AW2"]


def test_toloka_tsv_with_column_mapping(tmp_path, capsys):
    proj = create(tmp_path)
    rows = [{"INPUT:image": IDS[i], "INPUT:caption": "x", "OUTPUT:result": str(i % K), "GOLDEN:result": "",
             "ASSIGNMENT:worker_id": f"t{i % 2}", "ASSIGNMENT:status": "REJECTED" if i < 2 else "APPROVED"}
            for i in range(8)]
    pd.DataFrame(rows).to_csv(tmp_path / "assignments.tsv", sep="\t", index=False)
    assert ingest(proj, tmp_path / "assignments.tsv") == 1  # two INPUT: columns: which is the task?
    err = capsys.readouterr().err
    assert "cannot tell which column holds the task ids" in err and "--task-column" in err
    assert ingest(proj, tmp_path / "assignments.tsv", "--task-column", "INPUT:image") == 0
    out = capsys.readouterr().out
    assert "(toloka): 6 labels used; skipped 2 rejected assignments" in out  # class indices as text work too
    assert n_labels(proj) == 6


def test_plain_csv_with_other_column_names(tmp_path, capsys):
    proj = create(tmp_path)
    pd.DataFrame({"image": IDS[:4], "annotator": ["a", "b", "a", "b"], "answer": ["fox", "1", "cat", "dog"]}).to_csv(
        tmp_path / "mine.csv", index=False)
    argv = ["--task-column", "image", "--worker-column", "annotator", "--label-column", "answer"]
    assert ingest(proj, tmp_path / "mine.csv", *argv) == 0
    labels = pd.read_csv(proj / "labels.csv", dtype=str).set_index("task")["label"]
    assert labels[IDS[:4]].tolist() == ["fox", "dog", "cat", "dog"]


def test_bad_rows_reported_and_skipped(tmp_path, capsys):
    proj = create(tmp_path)
    pd.DataFrame({"task": [IDS[0], "stranger", IDS[1], IDS[2], IDS[2], IDS[3], IDS[4]],
                  "worker": ["a", "a", "a", "b", "b", "c", "d"],
                  "label": ["cat", "dog", "wolf", "3", "dog", "", "-1"]}).to_csv(tmp_path / "a.csv", index=False)
    assert ingest(proj, tmp_path / "a.csv") == 0
    out = capsys.readouterr().out
    assert "a.csv (csv): 2 labels used" in out
    assert "skipped 1 rows with an empty task, worker or label" in out
    assert "skipped 1 unknown tasks (not in the project's tasks) (e.g. 'stranger')" in out
    assert "skipped 3 labels that are not a class name of --class-names or an index 0..2 (e.g. 'wolf', '3', '-1')" \
        in out
    assert n_labels(proj) == 2  # cat for im00, dog for im02 by b
    # the first label of a (task, worker) pair is kept, a later one in the same file skipped
    pd.DataFrame({"task": [IDS[5], IDS[5]], "worker": ["e", "e"], "label": ["cat", "dog"]}).to_csv(
        tmp_path / "b.csv", index=False)
    assert ingest(proj, tmp_path / "b.csv") == 0
    assert "skipped 1 repeated (task, worker) pairs (the first label kept) (e.g. 'im05 by e')" in \
        capsys.readouterr().out


def test_workers_past_the_slots_are_skipped(tmp_path, capsys):
    proj = create(tmp_path)
    pd.DataFrame({"task": IDS[:7], "worker": [f"w{i}" for i in range(7)], "label": ["cat"] * 7}).to_csv(
        tmp_path / "a.csv", index=False)
    assert ingest(proj, tmp_path / "a.csv") == 0
    assert "skipped 2 labels from workers past the project's 5 worker slots (e.g. 'w5', 'w6')" in \
        capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"\xff\xfe\x00garbage\x00\x01", "not UTF-8 text"),
    (b"task,worker\nim00,a\n", "cannot tell which column holds the labels: expected a 'label' column"),
    (b'task,worker,label\nim00,a,"cat\n', "not a readable CSV table"),
    (b"WorkerId,Answer.x\nA,cat\n", "cannot tell which column holds the task ids: expected one Input.<name> column"),
])
def test_malformed_exports_refused(tmp_path, capsys, content, message):
    proj = create(tmp_path)
    before = (proj / "CURRENT").read_text()
    (tmp_path / "bad.csv").write_bytes(content)
    assert ingest(proj, tmp_path / "bad.csv") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --labels") or "bad.csv" in err
    assert message in err
    assert (proj / "CURRENT").read_text() == before


def test_features_of_the_wrong_length(tmp_path, capsys):
    np.save(tmp_path / "f.npy", np.zeros((N - 1, 4), np.float32))
    pd.DataFrame({"task": IDS}).to_csv(tmp_path / "tasks.csv", index=False)
    argv = ["next", "--project", str(tmp_path / "p"), "--tasks", str(tmp_path / "tasks.csv"), "--features",
            str(tmp_path / "f.npy"), "--classes", "3", "--method", "lean", "--hit-size", "10", "--batch", "20"]
    assert _cli.run(main, argv) == 1
    err = capsys.readouterr().err
    assert f"has {N - 1} rows but --tasks" in err and f"lists {N} tasks" in err
    assert not (tmp_path / "p").exists()


def test_refuses_a_folder_holding_other_files(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "thesis.tex").write_text("mine")
    pd.DataFrame({"task": IDS}).to_csv(tmp_path / "tasks.csv", index=False)
    argv = ["next", "--project", str(tmp_path / "p"), "--tasks", str(tmp_path / "tasks.csv"), "--classes", "3",
            "--method", "ds_model"]
    assert _cli.run(main, argv) == 2
    assert "holds other files (thesis.tex) and is not a labelling project" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["thesis.tex"]


def test_creation_options_checked(tmp_path, capsys):
    pd.DataFrame({"task": IDS}).to_csv(tmp_path / "tasks.csv", index=False)
    base = ["next", "--project", str(tmp_path / "p"), "--tasks", str(tmp_path / "tasks.csv")]
    cases = [
        (["--classes", "3"], "--method: the first call needs one of"),
        (["--classes", "3", "--method", "efficient_annotation"], "trains a learner on image features"),
        (["--classes", "3", "--class-names", "x", "--method", "ds_model"], "exactly one of --classes"),
        (["--classes", "3", "--method", "ds_model", "--batch", "5"], "--batch 5: expected at least --hit-size 40"),
        (["--classes", "3", "--method", "ds_model", "--warm-epochs", "-1"], "--warm-epochs: expected an integer >= 0"),
    ]
    for extra, message in cases:
        assert _cli.run(main, base + extra) == 2
        assert message in capsys.readouterr().err
    proj = create(tmp_path)
    assert _cli.run(main, ["next", "--project", str(proj), "--method", "lean"]) == 2
    assert "the project was created with 'ds_model'" in capsys.readouterr().err
    assert _cli.run(main, ["next", "--project", str(proj), "--learner-start", "cold"]) == 2
    assert "the project was created with 'warm'" in capsys.readouterr().err
    (tmp_path / "other.csv").write_text("task\nx\n")
    assert _cli.run(main, ["next", "--project", str(proj), "--tasks", str(tmp_path / "other.csv")]) == 2
    assert "not the file the project was created from" in capsys.readouterr().err
    # the creation command repeated as it was: the same round, unchanged
    assert _cli.run(main, ["next", "--project", str(proj), "--tasks", str(tmp_path / "tasks.csv")]) == 0
    assert "unchanged" in capsys.readouterr().out


def test_simulation_still_runs_without_subcommand(tmp_path, capsys):
    for head in ([], ["simulate"]):
        out = tmp_path / f"sim{len(head)}"
        argv = head + ["--synthetic", "200:4", "--method", "ds_model", "--budget", "0.5", "--workers", "5",
                       "--hit-size", "10", "--hits-per-step", "2", "--out", str(out)]
        assert main(argv) == 0
        assert (out / "labels_ds_model.csv").is_file()


def test_features_from_images_with_a_timm_model(tmp_path, monkeypatch, capsys):
    """--images + --model: the backbone's pooled output per task (rows in the tasks' order), cached in the project
    so a creation run again does not extract twice; a task without an image is named."""
    import timm
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    ids = IDS[:6]
    (tmp_path / "imgs").mkdir()
    for t in reversed(ids):
        Image.fromarray(rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{t}.png")
    pd.DataFrame({"task": ids}).to_csv(tmp_path / "tasks.csv", index=False)
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), tmp_path / "w.pth")
    argv = ["next", "--project", str(tmp_path / "p"), "--tasks", str(tmp_path / "tasks.csv"), "--images",
            str(tmp_path / "imgs"), "--model", "test_efficientnet", "--pretrained-path", str(tmp_path / "w.pth"),
            "--classes", "3", "--method", "lean", "--hit-size", "3", "--batch", "3", "--workers", "2"]
    assert main(argv) == 0
    feats = np.load(tmp_path / "p" / "features.npy")
    assert feats.shape == (6, 256) and np.isfinite(feats).all()
    assert len({row.tobytes() for row in feats}) == 6  # six different images, six different rows
    (tmp_path / "p" / "CURRENT").unlink()  # as if the creation had stopped before its first round was current
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("features extracted twice"))
    assert main(argv) == 0
    assert np.array_equal(np.load(tmp_path / "p" / "features.npy"), feats)
    (tmp_path / "imgs" / f"{ids[2]}.png").unlink()
    argv[2] = str(tmp_path / "q")
    assert _cli.run(main, argv) == 1
    assert f"no image for 1 of the 6 tasks, e.g. ['{ids[2]}']" in capsys.readouterr().err


def test_demo_team_three_rounds(tmp_path, capsys):
    """The README's example: the demo's simulated team answers exactly what next.csv asks for."""
    from luab_fast.annotate.demo_team import main as team

    setup, proj = tmp_path / "setup", tmp_path / "proj"
    assert team(["setup", "--out", str(setup), "--demo-size", "tiny"]) == 0
    n = len(pd.read_csv(setup / "tasks.csv"))
    assert np.load(setup / "features.npy").shape[0] == n
    assert main(["next", "--project", str(proj), "--tasks", str(setup / "tasks.csv"), "--features",
                 str(setup / "features.npy"), "--class-names", str(setup / "class_names.txt"), "--gold",
                 str(setup / "gold.csv"), "--method", "ds_model", "--hit-size", "10", "--batch", "40"]) == 0
    for r in (1, 2, 3):
        ans = tmp_path / f"answers_{r}.csv"
        assert team(["answer", "--setup", str(setup), "--project", str(proj), "--out", str(ans)]) == 0
        asked = pd.read_csv(proj / "next.csv", dtype=str)
        got = pd.read_csv(ans, dtype=str)
        assert got["task"].tolist() == asked["task"].tolist()
        assert got.groupby(asked["hit"])["worker"].nunique().eq(1).all()  # one worker a HIT
        assert main(["next", "--project", str(proj), "--labels", str(ans)]) == 0
    assert "round 3" in capsys.readouterr().out
    assert int(np.load(proj / "round-0003" / "arrays.npz")["task"].size) == 120


def test_short_hits_numbered_by_worker(tmp_path, capsys):
    """Fewer eligible tasks than --hit-size: each HIT is shortened, and next.csv numbers HITs where the sampler's
    worker changes, so no HIT holds a task twice."""
    pd.DataFrame({"task": IDS[:5]}).to_csv(tmp_path / "tasks.csv", index=False)
    assert main(["next", "--project", str(tmp_path / "p"), "--tasks", str(tmp_path / "tasks.csv"), "--classes", "3",
                 "--method", "ds_model", "--hit-size", "10", "--batch", "30", "--workers", "5"]) == 0
    nxt = pd.read_csv(tmp_path / "p" / "next.csv", dtype={"task": str})
    assert nxt["hit"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert not nxt.duplicated(["task", "hit"]).any()
    assert "next: 15 tasks in 3 HITs" in capsys.readouterr().out


@pytest.mark.parametrize("tasks, gold, message", [
    ("task\na\nb\na\n", None, "--tasks {d}/tasks.csv: task id 'a' is listed twice (rows 1 and 3)"),
    ("task\n", None, "--tasks {d}/tasks.csv: no task ids"),
    ("task\na\nb\nc\n", "task,label\nz,0\n", "--gold: tasks not in --tasks, e.g. ['z']"),
    ("task\na\nb\nc\n", "task,label\na,7\n", "--gold: labels that are not classes of the project, e.g. ['7']"),
    ("task\na\nb\nc\n", "image,class\na,0\n", "--gold: expected columns task,label, got image,class"),
])
def test_bad_creation_files(tmp_path, capsys, tasks, gold, message):
    (tmp_path / "tasks.csv").write_text(tasks)
    np.save(tmp_path / "f.npy", np.ones((3, 2), np.float32))
    argv = ["next", "--project", str(tmp_path / "p"), "--tasks", str(tmp_path / "tasks.csv"), "--classes", "3",
            "--method", "ds_model", "--hit-size", "1", "--batch", "1", "--workers", "2"]
    if gold:
        (tmp_path / "gold.csv").write_text(gold)
        argv += ["--gold", str(tmp_path / "gold.csv"), "--features", str(tmp_path / "f.npy")]
    assert _cli.run(main, argv) == 1
    assert message.format(d=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "p" / "CURRENT").exists()
