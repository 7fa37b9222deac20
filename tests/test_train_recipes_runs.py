"""python -m luab_fast.train with the timm recipe options, whole runs on the tiny demo (CPU): the EMA weights
evaluated beside the raw ones and checkpointed, a killed run with EMA, clipping and accumulation resumed
bit-identically, and the new settings refused on --resume when they differ."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from luab_fast.train.run import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def _args(demo, out, *extra):
    return ["--data", str(demo.train), "--out", str(out), "--device", "cpu", "--backend", "torchvision",
            "--batch-size", "16", "--image-size", "32", "--no-compare", "--byproducts", str(demo.store), *extra]


def test_ema_weights_differ_evaluate_and_are_checkpointed(demo, tmp_path):
    out = tmp_path / "run"
    assert main(_args(demo, out, "--max-steps", "3", "--model-ema", "--model-ema-decay", "0.5",
                      "--val-data", f"iid={demo.iid}")) == 0
    saved = torch.load(out / "luab" / "last.pt", weights_only=True)
    assert saved["ema"].keys() == saved["model"].keys()
    assert any(not torch.equal(saved["ema"][k], saved["model"][k]) for k in saved["model"])
    scores = json.loads((out / "metrics.json").read_text())["models"]["luab"]["eval"]
    assert {"iid", "iid_ema"} <= scores.keys() and 0 <= scores["iid_ema"]["top1"] <= 1


def _run(args, env=None):
    return subprocess.run([sys.executable, "-m", "luab_fast.train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def test_killed_and_resumed_with_ema_equals_uninterrupted(demo, tmp_path):
    common = ("--max-steps", "5", "--checkpoint-every", "2", "--deterministic", "--model-ema", "--model-ema-decay",
              "0.9", "--model-ema-warmup", "--clip-grad", "0.5", "--grad-accum-steps", "2", "--opt", "lamb")
    straight = _run(_args(demo, tmp_path / "a", *common))
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _run(_args(demo, tmp_path / "b", *common), env={"LUAB_FAST_KILL_AT_STEP": "3"})
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(_args(demo, tmp_path / "b", *common, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at epoch 0, batch 4, step 2" in resumed.stdout  # 2 batches a step
    a, b = (torch.load(tmp_path / d / "luab" / "last.pt", weights_only=True) for d in "ab")
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert a["state"]["step"] == b["state"]["step"] == 5


@pytest.mark.parametrize("change, message", [
    (["--opt", "sgd"], "opt 'adamw' → 'sgd'"),
    (["--model-ema-decay", "0.99"], "model_ema_decay 0.5 → 0.99"),
    (["--clip-grad", "2"], "clip_grad 1.0 → 2.0"),
    (["--grad-accum-steps", "2"], "grad_accum_steps 1 → 2"),
    (["--sched", "step"], "sched 'cosine' → 'step'"),
    (["--drop-path", "0.1"], "drop_path 0.0 → 0.1"),
])
def test_resume_refuses_other_recipe_settings(demo, tmp_path, capsys, change, message):
    out = tmp_path / "run"
    base = ("--max-steps", "1", "--model-ema", "--model-ema-decay", "0.5", "--clip-grad", "1")
    assert main(_args(demo, out, *base)) == 0
    assert main(_args(demo, out, *base, "--max-steps", "2", "--resume", *change)) == 2
    assert message in capsys.readouterr().err
