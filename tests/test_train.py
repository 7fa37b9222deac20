"""python -m luab_fast.train on the tiny demo (CPU): end to end, kill-and-resume, compiled step, DDP, errors."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from luab_fast.train.run import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from luab_fast.data import make_demo

    root = tmp_path_factory.mktemp("demo") / "tiny"
    make_demo(root, seed=0, size="tiny")
    return root


@pytest.fixture()
def torchrun() -> str:
    """The torchrun of this interpreter's environment (skips without one)."""
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if found is None:
        pytest.skip("torchrun not found")
    return found


def _args(demo_root, out, *extra):
    return ["--demo-size", "tiny", "--demo-root", str(demo_root), "--out", str(out), "--device", "cpu",
            "--batch-size", "32", "--workers", "2", *extra]


def _run(args, env=None):
    return subprocess.run([sys.executable, "-m", "luab_fast.train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def test_demo_end_to_end(demo_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(demo_root, out, "--epochs", "3")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("baseline", "luab"):
        for split in ("iid", "ood"):
            top1 = metrics["models"][model]["eval"][split]["top1"]
            assert 0.0 <= top1 <= 1.0
    assert "pointing_heat" in metrics["models"]["luab"]["eval"]["ood"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for model in ("baseline", "luab"):
        cls = [r["cls"] for r in log if r["model"] == model and "cls" in r]
        assert sum(cls[-3:]) / 3 < sum(cls[:3]) / 3  # the loss falls
    luab_steps = [r for r in log if r["model"] == "luab" and "heat" in r]
    assert luab_steps and all(r["heat"] >= 0 and r["point"] >= 0 for r in luab_steps)
    for f in ("curves.png", "attention_ood.png", "aggregated_labels.csv", "luab/last.pt"):
        assert (out / f).is_file(), f
    printed = capsys.readouterr().out
    assert "| iid |" in printed and "| ood |" in printed and "difference" in printed


def test_killed_and_resumed_equals_uninterrupted(demo_root, tmp_path):
    common = ("--no-compare", "--max-steps", "6", "--checkpoint-every", "2", "--deterministic", "--backend",
              "torchvision")
    straight = _run(_args(demo_root, tmp_path / "a", *common))
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _run(_args(demo_root, tmp_path / "b", *common), env={"LUAB_FAST_KILL_AT_STEP": "3"})
    assert killed.returncode == -signal.SIGKILL
    assert not list((tmp_path / "b" / "luab").glob(".*.tmp*"))  # nothing half-written left (.tmp.pt: the suffix)
    resumed = _run(_args(demo_root, tmp_path / "b", *common, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at epoch 0, batch 2, step 2" in resumed.stdout
    a = torch.load(tmp_path / "a" / "luab" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "luab" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text())["models"]["luab"]["eval"] for d in "ab")
    assert ma == mb
    # the log holds each step once: a step's record is written when its loss is read, and nothing after the
    # last checkpoint was (step 3 died unread; the resumed run logs it again from step 2's checkpoint)
    logged = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()
              if "loss" in line]
    assert logged == [1, 2, 3, 4, 5, 6]


def test_compiled_step_equals_eager(demo_root):
    from luab_fast.data import build_loader
    from luab_fast.train.config import TrainConfig
    from luab_fast.train.loop import make_step
    from luab_fast.train.model import LUABModel

    cfg = TrainConfig(image_size=32)
    loader = build_loader(demo_root / "train", 8, device="cpu", image_size=32, backend="torchvision",
                          byproducts=demo_root / "byproducts.store", heat_size=(2, 2))
    batch = next(iter(loader))
    torch.manual_seed(0)
    model = LUABModel("resnet10t", 10, 16)
    step = make_step(model, cfg, byproducts=True)
    args = (batch["images"], batch["target"], batch["point"], batch["point_weight"], batch["heat"])
    eager_loss, eager_parts = step(*args)
    eager_loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")  # no graph break through the ops
    loss, parts = compiled(*args)
    loss.backward()
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert parts.keys() == eager_parts.keys()
    for g, e in zip((p.grad for p in model.parameters()), eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    # later batches (new crops, targets, weights) reuse the one graph: fixed shapes, no recompiles
    loader.set_epoch(1)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for later in itertools.islice(loader, 2):
            loss, _ = compiled(later["images"], later["target"], later["point"], later["point_weight"], later["heat"])
            loss.backward()


def test_labels_only_loader_gives_a_labels_only_step(demo_root, tmp_path):
    """A loader without a byproduct store yields no byproduct keys; the trainer's step then takes the images and
    the class target alone, and its loss has the class term only (no lambdas zeroed, no tensors nulled)."""
    from luab_fast.data import build_loader
    from luab_fast.train.config import TrainConfig
    from luab_fast.train.loop import Trainer
    from luab_fast.train.model import LUABModel

    loader = build_loader(demo_root / "train", 8, device="cpu", image_size=32, backend="torchvision")
    batch = next(iter(loader))
    assert not loader.has_byproducts and not {"point", "point_weight", "heat"} & batch.keys()
    assert torch.equal(batch["target"], batch["labels"])  # no other class source: the folder labels
    cfg = TrainConfig(image_size=32, max_steps=1, compile="off")
    trainer = Trainer("baseline", LUABModel("resnet10t", 10, 16), loader, cfg, torch.device("cpu"), tmp_path, print)
    assert trainer.inputs == ("images", "target")
    loss, parts = trainer.step_fn(*[batch[k] for k in trainer.inputs])
    assert parts.keys() == {"cls"} and torch.equal(loss, parts["cls"])
    compiled = torch.compile(trainer.step_fn, fullgraph=True, backend="aot_eager")  # no graph break either
    torch.testing.assert_close(compiled(batch["images"], batch["target"])[0], loss, rtol=1e-5, atol=1e-6)
    trainer.fit(lambda record: None, lambda epoch: None)
    assert [r["step"] for r in trainer.state.history] == [1] and "point" not in trainer.state.history[0]


@pytest.mark.slow
def test_two_process_cpu_ddp(demo_root, tmp_path, torchrun):
    proc = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29517", "-m", "luab_fast.train",
                           *_args(demo_root, tmp_path / "ddp", "--no-compare", "--max-steps", "3")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["models"]["luab"]["steps"] == 3


_NAN_ON_RANK_1 = """
import os, sys, torch
from luab_fast.train import loop
from luab_fast.train.run import main

real, calls = loop.luab_loss, [0]
def loss_nan_from_step_3_on_rank_1(*args, **kwargs):
    loss, parts = real(*args, **kwargs)
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] >= 3:
        loss, parts = loss + float("nan"), {**parts, "point": parts["point"] + float("nan")}
    return loss, parts
loop.luab_loss = loss_nan_from_step_3_on_rank_1
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ddp_nan_on_one_rank_stops_every_rank(demo_root, tmp_path, torchrun):
    """The step values are averaged over ranks before the NaN guard reads them: a NaN on rank 1 alone stops
    both ranks at that step with the message, rather than leaving rank 0 waiting in the next collective."""
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(_NAN_ON_RANK_1)
    proc = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29518", str(script),
                           *_args(demo_root, tmp_path / "ddp", "--no-compare", "--max-steps", "8",
                                  "--checkpoint-every", "2")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("luab step 3: the point term went nan") == 2, proc.stderr[-3000:]  # both ranks
    saved = torch.load(tmp_path / "ddp" / "luab" / "last.pt", weights_only=False)
    assert saved["state"]["step"] == 2


def test_errors_are_clear(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert f"--data {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    assert main(["--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["--crop-scale", "0"]) == 2
    assert "--crop-scale" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 2\nlearning_rate: 3\n")
    assert main(["--config", str(cfg)]) == 2
    assert "unknown option" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--compile", "maybe"])


def test_labels_out_of_range_and_compile_fallback(demo_root, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "labels.csv"
    stems = sorted(p.stem for p in (demo_root / "train").glob("*/*.JPEG"))
    bad.write_text("task,label\n" + "".join(f"{s},{12 if i == 0 else 1}\n" for i, s in enumerate(stems)))
    args = ["--data", str(demo_root / "train"), "--labels", str(bad), "--out", str(tmp_path / "o"), "--device", "cpu",
            "--max-steps", "1", "--batch-size", "16"]
    assert main(args) == 1  # a label file that does not fit the data: bad data
    assert "label ids must lie in [0, 10)" in capsys.readouterr().err

    from luab_fast.train import loop
    from luab_fast.train.config import TrainConfig

    def broken_compile(fn, **kw):
        def run(*a):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    said = []
    step = loop.maybe_compile(lambda x: x + 1, TrainConfig(compile="on"), torch.device("cpu"), said.append)
    assert step(1) == 2 and step(2) == 3 and len(said) == 1 and "training eagerly" in said[0]
