"""benchmarks/relabel_evidence.py, issue 21's ReLabel experiment on the demo: the quick mode end to end (teacher,
label maps, packed store, every student variant, the table and the JSON), a rerun reusing every finished step, a
killed training continued with --resume, the teacher's weights exported as generate reads them, and the
table's arithmetic."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from luab_fast.relabel import LabelMapStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rx():
    """The script as a module: ``benchmarks`` is not installed, and ``pytest`` (unlike ``python -m pytest`` from the
    root) does not put the root on the path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        yield importlib.import_module("benchmarks.relabel_evidence")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def quick_run(rx, demo, work: Path, out: Path) -> str:
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert rx.main(["--quick", "--in-process", "--demo-root", str(demo.root), "--work", str(work),
                        "--out", str(out)]) == 0
    return text.getvalue()


@pytest.fixture(scope="module")
def quick(rx, demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    printed = quick_run(rx, demo, root / "work", root / "out")
    return root / "work", root / "out", printed


def test_quick_run_reports_every_variant(rx, quick, demo):
    work, out, printed = quick
    [path] = out.glob("relabel-evidence-quick-*.json")
    doc = json.loads(path.read_text())
    names = [v.name for v in rx.VARIANTS]
    assert [e["variant"] for e in doc["summary"]] == names
    for name in names:  # one table row per variant
        assert sum(line.startswith(f"| {name} |") for line in printed.splitlines()) == 1
    assert rx.cutmix_available(True)  # the trainer has --cutmix-relabel: nothing may be left out
    assert not any("not_run" in e for e in doc["summary"])
    store = work / "relabel.store"
    for row in doc["runs"]:
        metrics = json.loads((work / f"{row['variant']}-seed0" / "metrics.json").read_text())
        scores = metrics["models"]["baseline"]["eval"]
        assert (row["iid"], row["ood"]) == (scores["iid"]["top1"], scores["ood"]["top1"])
        assert row["steps"] == 1 and f"--data {demo.train} " in row["command"]
        uses_maps = row["variant"].startswith("relabel")
        assert (f"--label-maps {store}" in row["command"]) == uses_maps
        assert metrics["config"]["label_maps"] == (str(store) if uses_maps else None)
        assert metrics["config"]["cutmix"] == (1.0 if "cutmix" in row["variant"] else 0.0)
    region = next(r for r in doc["runs"] if r["variant"] == "relabel-cutmix-region")
    assert "--cutmix-relabel region" in region["command"]
    assert {r["variant"] for r in doc["runs"]} == set(names)
    # the maps: one per train image, 2×2 at --size 64 and stride 32, the teacher's 10 classes
    maps = LabelMapStore.open(store)
    assert (len(maps), maps.size, maps.topk, maps.num_classes) == (200, 2, 5, 10)
    stats = doc["maps"]
    assert (stats["images"], stats["map_side"]) == (200, 2)
    truth = pd.read_csv(demo.truth, dtype={"task": str}).set_index("task")["label"]
    agg = pd.read_csv(work / "teacher" / "aggregated_labels.csv", dtype={"task": str}).set_index("task")["label"]
    assert stats["aggregated_labels_correct"] == pytest.approx((agg == truth.loc[agg.index]).mean())
    for key in ("whole_image_target_correct", "digit_cells_top1_true_class", "background_cells_top1_true_class",
                "cells_in_digit_box", "maps_one_class_everywhere"):
        assert 0.0 <= stats[key] <= 1.0, key
    assert 0.0 < stats["cells_in_digit_box"] < 1.0  # digits cover part of the image, never all of it
    teacher = json.loads((work / "teacher" / "metrics.json").read_text())
    assert doc["teacher"]["iid"] == teacher["models"]["baseline"]["eval"]["iid"]["top1"]
    assert doc["teacher"]["arch"] == teacher["config"]["model"]


def test_rerun_reuses_every_finished_step(rx, quick, demo, tmp_path):
    work, out, _ = quick
    printed = quick_run(rx, demo, work, tmp_path)
    steps = ["teacher", "generate", "pack", *(f"{v.name}-seed0" for v in rx.VARIANTS)]
    for step in steps:
        assert f"reusing {step}: " in printed, step
    assert "\n$ python -m" not in printed  # nothing ran again (run_cli prints each command it runs so)
    [first] = out.glob("*.json")
    [second] = tmp_path.glob("*.json")
    assert json.loads(second.read_text())["summary"] == json.loads(first.read_text())["summary"]


def test_steps_resume_a_killed_training_and_rerun_after_new_maps(rx, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(rx, "run_cli", lambda module, args, in_process: calls.append(list(args)))
    out = tmp_path / "run" / "metrics.json"
    steps = rx.Steps(tmp_path, in_process=True)
    steps.run("s", "luab_fast.train", ["--seed", "0"], out)
    assert calls[-1] == ["--seed", "0"]  # first start: no --resume
    (steps.done / "s.txt").unlink()  # as if killed before its end: started, not finished
    steps.run("s", "luab_fast.train", ["--seed", "0"], out)
    assert calls[-1] == ["--seed", "0", "--resume"]
    out.parent.mkdir()
    out.write_text("{}")
    assert not steps.run("s", "luab_fast.train", ["--seed", "0"], out) and len(calls) == 2  # done: reused
    assert steps.run("s", "luab_fast.train", ["--seed", "1"], out)  # another command runs afresh
    assert calls[-1] == ["--seed", "1"]
    steps.run("maps", "luab_fast.relabel", ["pack"], tmp_path / "store", upstream=True)  # new maps ...
    assert steps.run("s", "luab_fast.train", ["--seed", "1"], out)  # ... make a finished student stale,
    assert calls[-1] == ["--seed", "1"]  # trained afresh, not resumed from its checkpoint of the old maps


def test_exported_teacher_is_the_trained_classifier(rx, tmp_path):
    from luab_fast.relabel.generate import dense_scores, load_model
    from luab_fast.train.model import LUABModel

    torch.manual_seed(0)
    trained = LUABModel("resnet10t", 10, output_stride=32, pool="avg").eval()
    (tmp_path / "baseline").mkdir()
    torch.save({"model": trained.state_dict()}, tmp_path / "baseline" / "last.pt")
    (tmp_path / "metrics.json").write_text(json.dumps({"config": {"model": "resnet10t"}}))
    assert rx.export_teacher(tmp_path, tmp_path / "t.pth") == "resnet10t"
    net = load_model(str(tmp_path / "t.pth"), "resnet10t")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = trained(x)[0]
        torch.testing.assert_close(net(x), logits)
        # the per-location scores generate writes average to the model's logits (a linear head on mean features)
        torch.testing.assert_close(dense_scores(net, x).mean((2, 3)), logits, rtol=1e-4, atol=1e-5)


def test_summary_means_paired_differences_and_not_run_rows(rx):
    rows = [{"variant": "labels", "seed": 0, "iid": 0.50, "ood": 0.20},
            {"variant": "labels", "seed": 1, "iid": 0.60, "ood": 0.30},
            {"variant": "relabel", "seed": 0, "iid": 0.55, "ood": 0.21},
            {"variant": "relabel", "seed": 1, "iid": 0.58, "ood": 0.36},
            {"variant": "labels-cutmix", "seed": 0, "iid": 0.40, "ood": 0.25},
            {"variant": "relabel-cutmix-mix", "seed": 0, "iid": 0.45, "ood": 0.20},
            {"variant": "relabel-cutmix-mix", "seed": 1, "iid": 0.47, "ood": 0.22}]
    summary = {e["variant"]: e for e in rx.summarise(rows, {"relabel-cutmix-region": rx.NO_CUTMIX})}
    r = summary["relabel"]
    assert r["iid"] == pytest.approx(0.565) and r["iid_per_seed"] == [0.55, 0.58]
    assert r["iid_vs_labels"] == pytest.approx(0.015)  # mean of +0.05 and -0.02
    assert np.allclose(r["ood_vs_labels_per_seed"], [0.01, 0.06])
    mix = summary["relabel-cutmix-mix"]
    assert mix["iid_vs_labels-cutmix_per_seed"] == pytest.approx([0.05])  # only seed 0 has a CutMix baseline
    assert mix["ood_vs_labels"] == pytest.approx(-0.04)
    assert summary["relabel-cutmix-region"]["not_run"] == rx.NO_CUTMIX
    assert "iid_vs_labels" not in summary["labels"]
    table = rx.markdown(list(summary.values()))
    assert "| relabel | 56.50% (55.0, 58.0) | 28.50% (21.0, 36.0) | +1.50 / +3.50 |  |" in table
    assert "| relabel-cutmix-mix | 46.00% (45.0, 47.0) | 21.00% (20.0, 22.0) | -9.00 / -4.00 | +5.00 / -5.00 " \
           "(labels-cutmix) |" in table
    assert f"| relabel-cutmix-region | {rx.NO_CUTMIX} | | | |" in table
