"""python -m luab_fast.train around the training itself (CPU, in process): evaluation splits matched to the
training classes by name, run directories (fresh runs, --out that cannot be one), --resume refusing another run's
checkpoint, --pretrained-path reading weights (this trainer's own included) and refusing others, and settings that
cannot train (an output stride the backbone cannot give, a one-cell heat map, WORLD_SIZE without torchrun)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from luab_fast.train.inputs import eval_source
from luab_fast.train.run import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def _train(demo, out, *extra):
    return main(["--data", str(demo.train), "--out", str(out), "--device", "cpu", "--backend", "torchvision",
                 "--batch-size", "16", "--image-size", "32", "--no-compare", "--byproducts", str(demo.store), *extra])


def test_eval_split_classes_matched_to_training_by_name(demo, tmp_path):
    from luab_fast.data.source import list_images

    train = list_images(demo.train)
    sub = tmp_path / "sub"
    for c in train.classes[3:6]:  # a split of three of the ten classes: its folders sort as 0, 1, 2
        shutil.copytree(demo.iid / c, sub / c)
    files, labels = eval_source(sub, "sub", train.classes)
    assert sorted(set(labels.tolist())) == [3, 4, 5]
    assert all(f"/{train.classes[k]}/" in f for f, k in zip(files, labels))
    assert eval_source(demo.iid, "iid", train.classes) == demo.iid  # same classes: used as it is
    (sub / "n99999999").mkdir()
    shutil.copy(files[0], sub / "n99999999" / "extra.JPEG")
    with pytest.raises(ValueError, match=r"--val-data sub=.*1 class\(es\) are not among the 10 training classes, "
                                         r"e.g. \['n99999999'\]"):
        eval_source(sub, "sub", train.classes)


def test_bad_val_data_fails_before_training(demo, tmp_path, capsys):
    assert _train(demo, tmp_path / "o", "--max-steps", "1", "--val-data", f"x={tmp_path / 'nope'}") == 2
    assert f"--val-data x={tmp_path / 'nope'}: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert _train(demo, tmp_path / "o", "--max-steps", "1", "--val-data", f"={demo.iid}") == 2
    assert "empty split name" in capsys.readouterr().err
    assert not (tmp_path / "o" / "luab").exists()  # nothing trained


def test_out_that_cannot_be_a_directory(demo, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert _train(demo, afile, "--max-steps", "1") == 2
    assert f"--out {afile}: cannot create the run directory" in capsys.readouterr().err
    assert afile.read_text() == "mine"


def test_fresh_run_replaces_an_earlier_runs_log(demo, tmp_path):
    out = tmp_path / "run"
    for _ in range(2):
        assert _train(demo, out, "--max-steps", "2", "--checkpoint-every", "1") == 0
    steps = [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2]  # not 1, 2, 1, 2: the second run did not append to the first one's log


def test_resume_refuses_another_runs_checkpoint(demo, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(demo, out, "--max-steps", "1", "--resume") == 0
    assert "--resume, but no checkpoint at" in capsys.readouterr().out
    assert _train(demo, out, "--max-steps", "2", "--resume", "--batch-size", "8", "--lr", "0.01") == 2
    err = capsys.readouterr().err
    assert "was saved by a run with other settings (batch_size 16 → 8; lr 0.002 → 0.01)" in err
    assert _train(demo, out, "--max-steps", "2", "--resume") == 0  # the same settings, a longer run: fine
    ckpt = out / "luab" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert _train(demo, out, "--max-steps", "3", "--resume") == 1  # a torn file: bad data
    assert f"--resume: {ckpt} is not a readable checkpoint" in capsys.readouterr().err


def test_pretrained_path_reads_weights_and_refuses_others(demo, tmp_path, recwarn):
    from luab_fast.train.model import LUABModel, load_backbone

    out = tmp_path / "run"
    assert _train(demo, out, "--max-steps", "1") == 0
    fresh = LUABModel("resnet10t", 10, 16, image_size=32)
    load_backbone(fresh.backbone, str(out / "luab" / "last.pt"))  # this trainer's checkpoint: its backbone
    saved = torch.load(out / "luab" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(v, saved[f"backbone.{k}"]) for k, v in fresh.backbone.state_dict().items())
    other = tmp_path / "r18.pt"
    torch.save(LUABModel("resnet18", 10, 16).backbone.state_dict(), other)
    with pytest.raises(ValueError, match="tensors have another shape than the backbone's"):
        load_backbone(fresh.backbone, str(other))
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    with pytest.raises(ValueError, match=r"holds a Tensor of shape \(3,\), expected a state dict"):
        load_backbone(fresh.backbone, str(tmp_path / "t.pt"))
    (tmp_path / "junk.pt").write_text("not weights")
    with pytest.raises(ValueError, match="cannot read it as weights"):
        load_backbone(fresh.backbone, str(tmp_path / "junk.pt"))
    with pytest.raises(ValueError, match="is a directory, expected a weights file"):
        load_backbone(fresh.backbone, str(tmp_path))
    part = dict(list(fresh.backbone.state_dict().items())[10:])
    torch.save(part, tmp_path / "part.pt")
    load_backbone(fresh.backbone, str(tmp_path / "part.pt"))
    assert any("9 of the backbone's 84 tensors are not in the file" in str(w.message) for w in recwarn)


@pytest.mark.parametrize("extra, message", [
    (["--output-stride", "3"], "--output-stride 3 is not one resnet10t can give"),
    (["--image-size", "16"], "--image-size 16 gives resnet10t a 1×1 feature map"),
])
def test_settings_that_cannot_train(demo, tmp_path, capsys, extra, message):
    assert _train(demo, tmp_path / "o", "--max-steps", "1", *extra) == 2
    assert message in capsys.readouterr().err


def test_world_size_without_torchrun(demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    assert _train(demo, tmp_path / "o", "--max-steps", "1") == 2
    assert "WORLD_SIZE=2 is set but RANK" in capsys.readouterr().err
    np.testing.assert_equal(torch.distributed.is_initialized(), False)


def test_a_failed_fresh_run_leaves_the_earlier_runs_outputs(demo, tmp_path):
    out = tmp_path / "run"
    assert _train(demo, out, "--max-steps", "1", "--val-data", f"iid={demo.iid}") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"metrics.json", "log.jsonl", "curves.png"} <= set(before)
    assert _train(demo, out, "--max-steps", "1", "--val-data", f"x={tmp_path / 'typo'}") == 2
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_data_that_does_not_exist(demo, tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert f"--data {tmp_path / 'nope'} does not exist (expected an ImageFolder directory" in capsys.readouterr().err


def test_image_stems_must_be_unique_when_matched_by_stem(demo, tmp_path, capsys):
    data = tmp_path / "train"
    shutil.copytree(demo.train, data)
    a, b = sorted(p for p in data.iterdir())[:2]
    shutil.copy(next(a.iterdir()), b / next(a.iterdir()).name)  # one file name in two class folders
    assert _train(demo, tmp_path / "o", "--max-steps", "1", "--data", str(data)) == 1  # the later --data wins
    assert "1 image file stem(s) occur more than once in the data" in capsys.readouterr().err


def test_checkpoints_that_cannot_be_resumed(tmp_path):
    from luab_fast.train import checkpoint

    empty = tmp_path / "last.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty \\(0 bytes\\), not a checkpoint"):
        checkpoint.load(empty)
    torch.save({"rng": np.random.get_state()}, empty)  # how checkpoints held the NumPy RNG before
    with pytest.raises(ValueError, match="was written by an earlier luab_fast"):
        checkpoint.load(empty)


def test_stems_follow_the_stores_rule():
    """--labels tasks and store rows are found by one rule: the file name up to its first "." (as stores key)."""
    from luab_fast._store.index import file_stem
    from luab_fast.data.source import ImageList

    images = ImageList(("d/n0/img.v2.JPEG", "d/n1/n01440764_18.JPEG"), np.array([0, 1]), ("n0", "n1"))
    assert images.stems == ["img", "n01440764_18"] == [file_stem(f) for f in images.files]
