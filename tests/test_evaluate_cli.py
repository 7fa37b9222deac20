"""python -m luab_fast.evaluate end to end: this trainer's checkpoints and a timm model with a local weights file,
results.json / results.md / results.png, --suite, the errors; and the trainer's --val-data NAME=KIND:PATH."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures.evaluate_images import IMAGES, save

from luab_fast import _cli
from luab_fast.evaluate.cli import main
from luab_fast.evaluate.kinds import imagenet_wnids
from luab_fast.train.model import LUABModel

WNIDS = imagenet_wnids()
CLASSES = [WNIDS[0], WNIDS[17], WNIDS[900]]
FAST = ["--device", "cpu", "--backend", "torchvision", "--workers", "2", "--batch-size", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    for i, (true, pred) in enumerate(IMAGES, 1):
        save(root / "val" / WNIDS[true] / f"ILSVRC2012_val_{i:08d}.JPEG", pred)
        save(root / "imagenet-r" / WNIDS[true] / f"{i}.jpg", pred)
        save(root / "imagenetv2-matched-frequency-format-val" / str(true) / f"{i}.jpeg", pred)
    (root / "real.json").write_text(json.dumps([[t] if i < len(IMAGES) else [] for i, (t, _) in
                                                enumerate(IMAGES + [(0, 0)] * (50_000 - len(IMAGES)))]))
    return root


def _checkpoint(path: Path, seed: int) -> Path:
    """A checkpoint in the trainer's format (Trainer.save) of a small LUAB model over CLASSES."""
    torch.manual_seed(seed)
    model = LUABModel("resnet10t", len(CLASSES), 32, pool="avg", image_size=32)
    run = {"model": "resnet10t", "image_size": 32, "output_stride": 32, "pool": "avg", "baseline_pool": "avg"}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "opt": {}, "sched": {}, "state": {"step": 3},
                "rng": {}, "run": run, "trainer": "baseline", "classes": CLASSES}, path)
    return path


def _run(argv: list[str], capsys) -> tuple[int, str]:
    status = _cli.run(main, argv)
    cap = capsys.readouterr()
    return status, cap.out + cap.err


def test_two_checkpoints_one_table_and_chart(data, tmp_path, capsys):
    a, b = _checkpoint(tmp_path / "a" / "last.pt", 0), _checkpoint(tmp_path / "b" / "last.pt", 1)
    out = tmp_path / "out"
    status, text = _run(["--checkpoint", str(a), str(b), "--split", f"val=imagenet:{data / 'val'}",
                         f"r=r:{data / 'imagenet-r'}", "--out", str(out), *FAST], capsys)
    assert status == 0, text
    doc = json.loads((out / "results.json").read_text())
    assert doc["device"].startswith("cpu") and doc["date"]
    assert [m["sha256"] for m in doc["models"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert [m["label"] for m in doc["models"]] == ["a/last", "b/last"]
    for m in doc["models"]:
        assert m["splits"]["val"]["n"] == m["splits"]["r"]["n"] == len(IMAGES)
        assert set(m["splits"]["val"]["per_class"]) == set(CLASSES)
        # the R split holds the model's three classes: restricting to them changes nothing
        assert m["splits"]["r"]["top1"] == m["splits"]["val"]["top1"]
    md = (out / "results.md").read_text()
    top1 = doc["models"][0]["splits"]["val"]["top1"]
    assert f"| val | imagenet | top1 | {100 * top1:.2f} |" in md and "a/last | b/last" in md
    assert "restricted to the split's 200 classes" in md
    assert (out / "results.png").stat().st_size > 1000


def test_ema_weights_and_a_lone_model_writes_no_chart(data, tmp_path, capsys):
    a = _checkpoint(tmp_path / "a" / "last.pt", 0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.png").write_bytes(b"old")
    status, text = _run(["--checkpoint", str(a), "--ema", "--split", f"val=imagenet:{data / 'val'}", "--out",
                         str(out), *FAST], capsys)
    assert status == 0, text
    assert json.loads((out / "results.json").read_text())["models"][0]["weights"] == "ema"
    assert not (out / "results.png").exists()


def test_timm_model_with_a_local_weights_file_and_a_class_map(data, tmp_path, capsys):
    import timm

    weights = tmp_path / "w.pth"
    torch.save(timm.create_model("resnet10t", num_classes=3).state_dict(), weights)
    cmap = tmp_path / "classes.txt"
    cmap.write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "out"
    status, text = _run(["--model", "resnet10t", "--pretrained-path", str(weights), "--class-map", str(cmap),
                         "--image-size", "32", "--split", f"v2=v2:{data / 'imagenetv2-matched-frequency-format-val'}",
                         "--out", str(out), *FAST], capsys)
    assert status == 0, text
    model = json.loads((out / "results.json").read_text())["models"][0]
    assert model["model"] == "resnet10t" and model["splits"]["v2"]["n"] == len(IMAGES)


def test_timm_model_without_class_map_needs_imagenet_classes(data, tmp_path, capsys):
    import timm

    weights = tmp_path / "w.pth"
    torch.save(timm.create_model("resnet10t", num_classes=3).state_dict(), weights)
    status, text = _run(["--model", "resnet10t", "--pretrained-path", str(weights), "--split",
                         f"v=imagenet:{data / 'val'}", "--out", str(tmp_path / "o"), *FAST], capsys)
    assert status == 1 and "does not fit timm's resnet10t" in text


def test_suite_finds_the_standard_folders(data, tmp_path, capsys):
    a = _checkpoint(tmp_path / "a" / "last.pt", 0)
    root = tmp_path / "root"
    root.mkdir()
    for name in ("val", "imagenet-r", "imagenetv2-matched-frequency-format-val", "real.json"):
        (root / name).symlink_to(data / name)
    status, text = _run(["--checkpoint", str(a), "--suite", "imagenet", str(root), "--out", str(tmp_path / "o"),
                         *FAST], capsys)
    assert status == 0, text
    splits = json.loads((tmp_path / "o" / "results.json").read_text())["models"][0]["splits"]
    assert {k: v["kind"] for k, v in splits.items()} == {"imagenet": "imagenet", "v2": "v2", "r": "r",
                                                         "real": "real"}
    assert splits["real"]["n"] == len(IMAGES) and splits["v2"]["top1"] == splits["imagenet"]["top1"]


@pytest.mark.parametrize("argv, message", [
    (["--split", "v=imagenet:."], "give a model"),
    (["--checkpoint", "x.pt"], "give the splits"),
    (["--checkpoint", "x.pt", "--split", "v=nosuchkind:."], "KIND one of imagenet, real, v2"),
    (["--checkpoint", "x.pt", "--split", "v=v2:/no/such/dir"], "/no/such/dir does not exist"),
    (["--model", "resnet10t", "--split", "v=v2:."], "--pretrained-path FILE"),
    (["--checkpoint", "x.pt", "--split", "v=v2:.", "v=r:."], "given twice"),
])
def test_usage_errors(argv, message, capsys):
    status, text = _run(argv + FAST, capsys)
    assert status == 2 and message in text


def test_missing_checkpoint_and_class_map_are_named(data, tmp_path, capsys):
    status, text = _run(["--checkpoint", str(tmp_path / "none.pt"), "--split", f"v=imagenet:{data / 'val'}",
                         *FAST], capsys)
    assert status == 2 and "--checkpoint" in text and "none.pt does not exist" in text
    a = _checkpoint(tmp_path / "a" / "last.pt", 0)
    status, text = _run(["--checkpoint", str(a), "--class-map", str(tmp_path / "nomap.txt"), "--split",
                         f"v=imagenet:{data / 'val'}", *FAST], capsys)
    assert status == 2 and "--class-map" in text and "nomap.txt does not exist" in text


def test_trainer_val_data_kind_goes_through_the_same_module(data, tmp_path):
    """--val-data NAME=KIND:PATH beside the bare NAME=PATH form, in training and in --eval-only: the same images
    as wnid folders (bare and imagenet:) and as V2 index folders score the same top-1."""
    from luab_fast.train.run import main as train_main

    train = tmp_path / "train"
    shutil.copytree(data / "val", train)
    v2 = data / "imagenetv2-matched-frequency-format-val"
    common = ["--data", str(train), "--max-steps", "1", "--batch-size", "4", "--image-size", "32", "--device", "cpu",
              "--backend", "torchvision", "--workers", "2", "--compile", "off", "--model", "resnet10t",
              "--output-stride", "32"]
    run = tmp_path / "run"
    assert train_main([*common, "--val-data", f"plain={data / 'val'}", f"kind=imagenet:{data / 'val'}",
                       f"v2=v2:{v2}", "--out", str(run)]) == 0
    ev = json.loads((run / "metrics.json").read_text())["models"]["baseline"]["eval"]
    assert ev["plain"]["top1"] == ev["kind"]["top1"] == ev["v2"]["top1"]
    assert ev["kind"]["kind"] == "imagenet" and ev["v2"]["images"] == len(IMAGES)
    again = tmp_path / "again"
    assert train_main(["--eval-only", str(run / "baseline" / "last.pt"), "--val-data", f"v2=v2:{v2}", "--device",
                       "cpu", "--backend", "torchvision", "--out", str(again)]) == 0
    assert json.loads((again / "metrics.json").read_text())["models"]["baseline"]["eval"]["v2"]["top1"] == \
        ev["v2"]["top1"]


def test_imagenet_c_relative_mce_takes_the_runs_clean_error(data, tmp_path, capsys):
    a = _checkpoint(tmp_path / "a" / "last.pt", 0)
    for s in range(1, 6):
        save(tmp_path / "c" / "gaussian_noise" / str(s) / WNIDS[17] / "0.JPEG", 17)
    out = tmp_path / "out"
    status, text = _run(["--checkpoint", str(a), "--split", f"c=imagenet-c:{tmp_path / 'c'}",
                         f"val=imagenet:{data / 'val'}", "--out", str(out), *FAST], capsys)
    assert status == 0, text
    splits = json.loads((out / "results.json").read_text())["models"][0]["splits"]
    assert list(splits) == ["val", "c"]  # ImageNet first: its error is the clean error
    from luab_fast.evaluate.kinds_imagenet_c import ALEXNET_CLEAN_ERR, ALEXNET_ERR

    clean = 1 - splits["val"]["top1"]
    errors = [splits["c"][f"error/gaussian_noise/{s}"] for s in range(1, 6)]
    expected = 100 * sum(e - clean for e in errors) / (5 * (ALEXNET_ERR["gaussian_noise"] - ALEXNET_CLEAN_ERR))
    assert splits["c"]["relative_ce/gaussian_noise"] == pytest.approx(expected)
