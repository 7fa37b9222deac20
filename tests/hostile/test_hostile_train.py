"""Hostile input to ``python -m luab_fast.train``: absurd-but-finite numbers, checkpoints and weights of the wrong
structure, a full disk while checkpointing, a killed writer's temporaries, unreadable data. Each fails with one
``error:`` line naming the option or file (exit 2 for an argument, 1 for data), no traceback, and nothing lost or
left behind; files come out with the umask's mode."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess

import pytest
import torch

from luab_fast.train import checkpoint

from .conftest import leftovers, run_process, snapshot


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def _args(demo, out, *extra):
    """A short labels+byproducts run on the demo's train split given as user data (as tests/test_train_runs.py)."""
    return ["--data", demo.train, "--out", out, "--device", "cpu", "--backend", "torchvision", "--batch-size", "16",
            "--image-size", "32", "--no-compare", "--byproducts", demo.store, "--max-steps", "1", *extra]


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# --- absurd numbers: usage errors (exit 2) before anything is set up -----------------------------------------

@pytest.mark.parametrize("option, value, fragments", [
    ("--heat-sigma", "1e10", ["--heat-sigma", "(0, 32]", "1e+10"]),
    ("--image-size", str(2 ** 40), ["--image-size", "8..4096", str(2 ** 40)]),
    ("--image-size", "4", ["--image-size", "8..4096"]),
    ("--workers", "100000", ["--workers", "1..1024", "100000"]),
    ("--workers", "0", ["--workers", "got 0"]),
    ("--seed", str(2 ** 70), ["--seed", "2**63 - 1"]),
    ("--lr", "1e300", ["--lr", "[0, 10]", "1e+300"]),
    ("--lr", "-1", ["--lr", ">= 0"]),
    ("--weight-decay", "1e300", ["--weight-decay", "at most 500 with --lr 0.002"]),
    ("--weight-decay", "-0.5", ["--weight-decay", ">= 0"]),
    ("--batch-size", "0", ["--batch-size", ">= 1"]),
    ("--epochs", "0", ["--epochs", ">= 1"]),
    ("--max-steps", "-5", ["--max-steps", ">= 1"]),
    ("--checkpoint-every", "0", ["--checkpoint-every", ">= 1"]),
    ("--output-stride", "0", ["--output-stride", ">= 1"]),
    ("--crop-scale", "0", ["--crop-scale", "(0, 1]"]),
    ("--label-smoothing", "1", ["--label-smoothing", "[0, 1)"]),
    ("--lambda-heat", "-0.5", ["--lambda-heat", ">= 0"]),
    ("--opt", "adamx", ["--opt", "timm", "'adamx'"]),
    ("--momentum", "1.5", ["--momentum", "[0, 1)", "1.5"]),
    ("--layer-decay", "0", ["--layer-decay", "(0, 1]"]),
    ("--model-ema-decay", "1", ["--model-ema-decay", "[0, 1)"]),
    ("--clip-grad", "0", ["--clip-grad", "(0, inf)"]),
    ("--clip-grad", "inf", ["--clip-grad", "finite"]),
    ("--grad-accum-steps", "0", ["--grad-accum-steps", "[1, 1024]", "got 0"]),
    ("--drop-path", "1", ["--drop-path", "[0, 1)"]),
    ("--warmup-epochs", "-1", ["--warmup-epochs", "[0, inf)"]),
    ("--decay-milestones", "3 1", ["--decay-milestones", "increasing", "3 1"]),
    ("--model-kwargs", "stem_width", ["--model-kwargs", "name=value", "'stem_width'"]),
    ("--model-kwargs", "x=[1, 2]", ["--model-kwargs", "a single value"]),
])
def test_absurd_numbers_are_usage_errors(cli, demo, tmp_path, option, value, fragments):
    values = value.split() if option == "--decay-milestones" else [value]
    cli("train", *_args(demo, tmp_path / "o", option, *values)).failed_with(2, *fragments)
    assert not (tmp_path / "o").exists()  # refused before the run directory was made


@pytest.mark.parametrize("extra, fragments", [
    (["--warmup-steps", "5", "--warmup-epochs", "1"], ["--warmup-steps 5 and --warmup-epochs 1", "one warm-up"]),
    (["--sched", "plateau", "--warmup-steps", "5"], ["--warmup-steps", "plateau", "--warmup-epochs"]),
    (["--sched", "plateau"], ["--sched plateau needs an evaluation split"]),
    (["--model-kwargs", "no_such_arg=1"], ["--model 'resnet10t' does not take", "no_such_arg", "--model-kwargs"]),
    (["--opt-betas", "0.9", "1.5"], ["--opt-betas", "[0, 1)", "0.9 1.5"]),
])
def test_recipe_options_that_cannot_train(cli, demo, tmp_path, extra, fragments):
    cli("train", *_args(demo, tmp_path / "o", *extra)).failed_with(2, *fragments)


@pytest.mark.parametrize("flag, modules, package", [
    ("--log-tensorboard", ("tensorboard", "torch.utils.tensorboard"), "tensorboard"),
    ("--log-wandb", ("wandb",), "wandb"),
])
def test_log_flag_without_its_package(cli, demo, tmp_path, monkeypatch, flag, modules, package):
    """Neither package is a dependency: asked for while not importable, the flag is a usage error naming the
    package to install, before the run directory is made (sys.modules[name] = None makes the import fail)."""
    import sys

    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)
    cli("train", *_args(demo, tmp_path / "o", flag)).failed_with(2, flag, f"pip install {package}")
    assert not (tmp_path / "o").exists()


def test_heat_sigma_wider_than_the_models_heat_map(cli, demo, tmp_path):
    """Within the static bound (the crop side) but wider than resnet10t's 2×2 map at 32 px: every target flat."""
    cli("train", *_args(demo, tmp_path / "o", "--heat-sigma", "5")).failed_with(
        2, "--heat-sigma", "(0, 2] cells", "2×2", "got 5")
    assert not (tmp_path / "o" / "luab").exists()


@pytest.mark.parametrize("backend", ["torchvision", "dali"])
def test_batch_size_beyond_the_data_fails_before_the_loader(cli, demo, tmp_path, monkeypatch, backend):
    from luab_fast.data import loader

    monkeypatch.setattr(loader, "Loader", lambda *a, **k: pytest.fail("a loader was built"))
    args = _args(demo, tmp_path / "o", "--batch-size", str(2 ** 40), "--backend", backend)
    cli("train", *args).failed_with(2, f"--batch-size {2 ** 40} is larger than the 200 training images")


def test_world_size_that_is_not_a_number(cli, demo, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    cli("train", *_args(demo, tmp_path / "o")).failed_with(2, "WORLD_SIZE", "'two'", "torchrun")


def test_heat_sigma_1e10_on_the_demo_does_not_abort_the_process(demo, tmp_path):
    """The reported case, as a user runs it (a child process: an abort there cannot take the suite down)."""
    r = run_process("train", "--demo-size", "tiny", "--demo-root", demo.root, "--max-steps", "2",
                    "--heat-sigma", "1e10", "--out", tmp_path / "o", "--device", "cpu")
    r.failed_with(2, "--heat-sigma", "1e+10")


# --- paths the wrong way round -------------------------------------------------------------------------------

def test_demo_root_that_is_a_file(cli, demo, tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    cli("train", "--demo-size", "tiny", "--demo-root", mine, "--out", tmp_path / "o", "--device", "cpu",
        "--max-steps", "1").failed_with(2, "--demo-root", "notes.txt", "it is a file")
    assert mine.read_text() == "mine"


@pytest.mark.parametrize("what, make, status, fragments", [
    ("folder", lambda p: p.mkdir(), 2, ["--labels", "is a directory"]),
    ("binary", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00" * 8), 1, ["--labels", "not a readable CSV"]),
    ("empty", lambda p: p.write_bytes(b""), 1, ["--labels", "not a readable CSV"]),
])
def test_labels_that_cannot_be_read(cli, demo, tmp_path, what, make, status, fragments):
    make(tmp_path / "labels.csv")
    before = snapshot(tmp_path)
    cli("train", *_args(demo, tmp_path / "o", "--labels", tmp_path / "labels.csv")).failed_with(status, *fragments)
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("o/")} == before


def test_unreadable_image_is_bad_data(cli, demo, tmp_path):
    data = tmp_path / "train"
    shutil.copytree(demo.train, data)
    broken = sorted(data.glob("*/*.JPEG"))[7]
    broken.write_bytes(broken.read_bytes()[:5])  # a torn header
    cli("train", *_args(demo, tmp_path / "o", "--data", data)).failed_with(1, "1 of 200 images cannot be read",
                                                                             broken.name)


# --- checkpoints and weights of the wrong structure -------------------------------------------------------------

def _model_state():
    from luab_fast.train.model import LUABModel

    return LUABModel("resnet10t", 10, 16, image_size=32).state_dict()


WRONG = {
    "list": (lambda: [1, 2, 3], "holds a list"),
    "state_dict": (_model_state, "holds a state dict of"),
    "dict": (lambda: {"epoch": 3, "weights": torch.zeros(2)}, "holds a dict of epoch, weights"),
    "tensor": (lambda: torch.zeros(4, 4), "holds a Tensor of shape (4, 4)"),
    # every key, but the parts inside are not this trainer's
    "parts": (lambda: {"model": _model_state(), "opt": {}, "sched": {}, "state": {"bogus": 1}, "rng": {}},
              "not a usable checkpoint of this trainer"),
}


@pytest.mark.parametrize("kind", ["list", "state_dict", "parts"])
def test_resume_from_a_file_that_is_not_a_checkpoint(cli, demo, tmp_path, kind):
    make, said = WRONG[kind]
    ckpt = tmp_path / "o" / "luab" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save(make(), ckpt)
    before = snapshot(tmp_path / "o")
    r = cli("train", *_args(demo, tmp_path / "o", "--resume")).failed_with(1, "--resume", str(ckpt), said)
    assert "KeyError" not in r.err
    assert snapshot(tmp_path / "o") == before  # the file is left for the user to look at


@pytest.mark.parametrize("kind", ["dict", "tensor"])
def test_checkpoint_load_says_what_the_file_holds(tmp_path, kind):
    make, said = WRONG[kind]
    torch.save(make(), tmp_path / "last.pt")
    with pytest.raises(ValueError, match=said.replace("(", r"\(").replace(")", r"\)")):
        checkpoint.load(tmp_path / "last.pt")


def test_pretrained_path_that_holds_no_state_dict(cli, demo, tmp_path):
    torch.save([1, 2, 3], tmp_path / "w.pt")
    cli("train", *_args(demo, tmp_path / "o", "--pretrained-path", tmp_path / "w.pt")).failed_with(
        1, "--pretrained-path", "w.pt", "holds a list", "expected a state dict")


@pytest.mark.parametrize("content, said", [
    ({"epoch": 3, "weights": torch.zeros(2)}, "holds a dict of epoch, weights"),
    ({0: torch.zeros(3), 1: torch.zeros(3)}, "holds a dict of 0, 1"),  # keys that are no parameter names
    ({"state_dict": {}}, "holds a dict of nothing"),
])
def test_pretrained_weights_of_the_wrong_structure(tmp_path, content, said):
    from luab_fast._cli import DataError
    from luab_fast.train.model import LUABModel, load_backbone

    torch.save(content, tmp_path / "w.pt")
    with pytest.raises(DataError, match=f"--pretrained-path .*w.pt {said}, expected a state dict"):
        load_backbone(LUABModel("resnet10t", 10, 16, image_size=32).backbone, str(tmp_path / "w.pt"))


# --- writes: a full disk, a killed writer's temporaries, the umask's mode --------------------------------------

def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(cli, demo, tmp_path, monkeypatch):
    """The second save hits ENOSPC inside torch.save's writes: exit 1, one message naming the checkpoint, the
    step-1 checkpoint intact, no temporary left."""
    saves = {"n": 0}

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            if self.f.tell() > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def open_(path, mode="r", *a, **k):
        f = open(path, mode, *a, **k)
        saves["n"] += "w" in mode
        return Full(f) if "w" in mode and saves["n"] == 2 else f

    monkeypatch.setattr(checkpoint, "open", open_, raising=False)
    out = tmp_path / "o"
    r = cli("train", *_args(demo, out, "--max-steps", "2", "--checkpoint-every", "1"))
    r.failed_with(1, "no space left", str(out / "luab" / "last.pt"))
    assert saves["n"] == 2
    assert torch.load(out / "luab" / "last.pt", weights_only=True)["state"]["step"] == 1
    assert leftovers(out) == [] and not (out / "metrics.json").exists()


def test_a_killed_writers_temporaries_are_swept_and_files_get_the_umask_mode(cli, demo, tmp_path):
    """What a SIGKILL mid-write leaves (a temporary named with a dead pid) goes at the next write of that file;
    every file the run writes, checkpoint and figures included, has the mode 0o666 & ~umask (not mkstemp's 0600)."""
    out = tmp_path / "o"
    (out / "luab").mkdir(parents=True)
    dead = _dead_pid()
    stale = [out / "luab" / f".last.pt.{dead}.x1y2.tmp", out / "luab" / f".last.pt.{dead}.k3.tmp.pt",
             out / f".metrics.json.{dead}.ab.tmp", out / f".curves.png.{dead}.cd.tmp.png"]
    for s in stale:
        s.write_bytes(b"half")
    old = os.umask(0o027)
    try:
        cli("train", *_args(demo, out, "--checkpoint-every", "1", "--labels", demo.labels)).ok()
    finally:
        os.umask(old)
    assert not any(s.exists() for s in stale) and leftovers(out) == []
    written = ["luab/last.pt", "metrics.json", "log.jsonl", "curves.png", "aggregated_labels.csv"]
    assert {f: oct((out / f).stat().st_mode & 0o777) for f in written} == {f: oct(0o640) for f in written}
    assert json.loads((out / "metrics.json").read_text())["models"]["luab"]["steps"] == 1


# --- starting points and checkpoints (issue 20) -------------------------------------------------------------------

@pytest.mark.parametrize("extra, fragments", [
    (["--checkpoint-hist", "0"], ["--checkpoint-hist", ">= 1", "got 0"]),
    (["--checkpoint-hist", "-3"], ["--checkpoint-hist", ">= 1", "got -3"]),
    (["--checkpoint-hist", "2"], ["--checkpoint-hist 2 needs an evaluation split", "--val-data"]),
    (["--eval-metric", "loss"], ["--eval-metric", "invalid choice", "'loss'"]),
    (["--ema"], ["--ema", "--eval-only", "--model-ema"]),
    (["--pretrained-file", "w.pth"], ["--pretrained-file w.pth", "give --pretrained too"]),
    (["--pretrained", "--pretrained-path", "w.pth"], ["--pretrained and --pretrained-path w.pth", "one starting"]),
    (["--eval-only", "last.pt"], ["--eval-only last.pt", "--val-data NAME=DIR"]),
    (["--eval-only", "last.pt", "--val-data", "x=y", "--resume"], ["--eval-only last.pt and --resume"]),
])
def test_checkpoint_options_that_cannot_work(cli, demo, tmp_path, extra, fragments):
    cli("train", *_args(demo, tmp_path / "o", *extra)).failed_with(2, *fragments)
    assert not (tmp_path / "o" / "luab").exists()  # nothing trained


def test_pretrained_file_that_is_missing_or_no_weights(cli, demo, tmp_path):
    cli("train", *_args(demo, tmp_path / "o", "--pretrained", "--pretrained-file", tmp_path / "nope.pth")).failed_with(
        2, "--pretrained-file", "nope.pth", "does not exist")
    (tmp_path / "junk.pth").write_bytes(b"not weights at all")
    cli("train", *_args(demo, tmp_path / "o", "--pretrained", "--pretrained-file", tmp_path / "junk.pth")).failed_with(
        1, "--pretrained-file", "junk.pth", "cannot load it as resnet10t's pretrained weights")


def _eval(demo, out, path, *extra):
    return ["--eval-only", path, "--val-data", f"iid={demo.iid}", "--out", out, "--device", "cpu", "--backend",
            "torchvision", "--batch-size", "16", "--image-size", "32", "--data", demo.train, *extra]


@pytest.mark.parametrize("make, status, fragments", [
    (None, 2, ["--eval-only", "nope.pt", "does not exist"]),
    (lambda p: p.mkdir(), 2, ["--eval-only", "is a directory"]),
    (lambda p: p.write_bytes(b""), 1, ["--eval-only", "cannot read it as a checkpoint or weights"]),
    (lambda p: p.write_bytes(b"\x00garbage" * 10), 1, ["--eval-only", "cannot read it as a checkpoint or weights"]),
    (lambda p: torch.save([1, 2, 3], p), 1, ["--eval-only", "holds a list", "expected a state dict"]),
    (lambda p: torch.save({"fc.weight": torch.zeros(1000, 512)}, p), 1, ["--eval-only", "does not fit"]),
    (lambda p: torch.save({k: v for k, v in _model_state().items() if "classifier" not in k}, p), 1,
     ["--eval-only", "does not fit", "classifier.weight"]),
    (lambda p: torch.save(_timm_state(1000), p), 1,
     ["--eval-only", "fc.weight (1000, 512)", "expected a classifier for the 10 classes"]),
    (lambda p: torch.save({"model": _model_state(), "opt": [], "sched": {}, "state": {}, "rng": {}}, p), 1,
     ["--eval-only", "holds a dict with opt as a list"]),
])
def test_eval_only_of_a_file_that_is_not_a_checkpoint(cli, demo, tmp_path, make, status, fragments):
    path = tmp_path / "nope.pt"
    if make:
        make(path)
    r = cli("train", *_eval(demo, tmp_path / "o", path)).failed_with(status, *fragments)
    assert "Traceback" not in r.err
    assert not (tmp_path / "o" / "metrics.json").exists()


def _timm_state(classes):
    import timm

    return timm.create_model("resnet10t", num_classes=classes).state_dict()


def test_eval_only_ema_of_a_checkpoint_without_one(cli, demo, tmp_path):
    assert cli("train", *_args(demo, tmp_path / "run")).status == 0
    cli("train", *_eval(demo, tmp_path / "o", tmp_path / "run" / "luab" / "last.pt", "--ema")).failed_with(
        1, "--ema", "last.pt holds no EMA weights", "--model-ema")
    torch.save(_timm_state(10), tmp_path / "timm.pth")
    cli("train", *_eval(demo, tmp_path / "o", tmp_path / "timm.pth", "--ema")).failed_with(
        2, "--ema", "plain state dict", "no EMA weights")
    before = snapshot(tmp_path / "run")  # the training run's metrics.json is not replaced by an evaluation's
    cli("train", *_eval(demo, tmp_path / "run", tmp_path / "run" / "luab" / "last.pt")).failed_with(
        2, "--out", "holds a training run's metrics.json", "another --out")
    assert snapshot(tmp_path / "run") == before


def test_eval_only_under_torchrun_is_refused(cli, demo, tmp_path, monkeypatch):
    """Every rank would evaluate the same splits and write one metrics.json: one process only, said before reading."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    cli("train", *_eval(demo, tmp_path / "o", tmp_path / "any.pt")).failed_with(
        2, "--eval-only runs in one process", "WORLD_SIZE=2")
    assert not (tmp_path / "o").exists()
