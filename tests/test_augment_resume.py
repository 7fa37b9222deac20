"""A deterministic run with --aa, random erasing and CutMix, killed and resumed, ends with the weights of an
uninterrupted one: the augmentation and the mixing are drawn per (seed, epoch, rank, batch), like the crops."""

from __future__ import annotations

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


def test_killed_and_resumed_with_aa_and_cutmix_equals_uninterrupted(demo, tmp_path):
    def args(out):
        return ["--data", str(demo.train), "--byproducts", str(demo.store), "--out", str(out), "--device", "cpu",
                "--backend", "torchvision", "--batch-size", "16", "--image-size", "32", "--workers", "2",
                "--no-compare", "--max-steps", "4", "--checkpoint-every", "2", "--deterministic",
                "--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.5", "--remode", "pixel", "--cutmix", "1.0",
                "--mixup", "0.8", "--mixup-switch-prob", "0.5"]

    assert main(args(tmp_path / "a")) == 0
    killed = subprocess.run([sys.executable, "-m", "luab_fast.train", *args(tmp_path / "b")], cwd=ROOT,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "LUAB_FAST_KILL_AT_STEP": "3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert main([*args(tmp_path / "b"), "--resume"]) == 0
    a = torch.load(tmp_path / "a" / "luab" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "luab" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
