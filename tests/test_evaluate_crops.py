"""The evaluation crop per split (issue 22): build_loader's crop_fraction / crop_border on both backends, each
kind's own crop (the whole image where its authors' code scores it whole), --crop-pct and --interpolation
reaching the loader and results.json, and the trainer's --val-data using the same per-kind crops."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fixtures.evaluate_images import ColourModel, colour_of
from PIL import Image

from luab_fast import _cli
from luab_fast.data.decode import MEAN, STD
from luab_fast.data.loader import build_loader, dali_available
from luab_fast.evaluate import REGISTRY, Options, runner
from luab_fast.evaluate.cli import main
from luab_fast.evaluate.kinds import imagenet_wnids

BACKENDS = ["torchvision", pytest.param("dali", marks=pytest.mark.skipif(not dali_available(), reason="no DALI"))]
WNIDS = imagenet_wnids()
CENTRE, RING = (0, 160, 0), (255, 0, 0)
SIDE, WIDTH = 80, 5  # a 5-px ring: exactly what the 87.5% crop of an 80-px image drops on each side


def framed(path: Path, side: int = SIDE, width: int = WIDTH, centre=CENTRE, ring=RING) -> Path:
    """A square PNG: a ring of ``width`` px in one colour around a centre of another."""
    img = np.empty((side, side, 3), np.uint8)
    img[:] = ring
    img[width:side - width, width:side - width] = centre
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def pixels(images: torch.Tensor) -> np.ndarray:
    """[B, S, S, 3] 0..255 of a normalised batch."""
    return (images.float().permute(0, 2, 3, 1) * torch.tensor(STD) + torch.tensor(MEAN)).numpy() * 255


@pytest.mark.parametrize("backend", BACKENDS)
def test_crop_fraction_one_sees_the_ring_the_default_does_not(tmp_path, backend):
    files = [str(framed(tmp_path / "a.png"))]
    kw = dict(train=False, device="cpu", image_size=16, backend=backend, threads=1, drop_last=False)
    default = next(iter(build_loader((files, np.zeros(1, np.int64)), 1, **kw)))
    whole = next(iter(build_loader((files, np.zeros(1, np.int64)), 1, crop_fraction=1.0, **kw)))
    # 87.5% of 80 px = the 70-px centre from (5, 5): the ring lies outside, every pixel is the centre's colour
    assert np.abs(pixels(default["images"]) - CENTRE).max() < 12
    assert default["boxes"].tolist() == [[0.0625, 0.0625, 0.9375, 0.9375]]
    # the whole image: its outer pixel (5 px of 80 = one of 16) is the ring's colour, its middle the centre's
    got = pixels(whole["images"])[0]
    assert np.abs(got[0, 0] - RING).max() < 40 and np.abs(got[8, 8] - CENTRE).max() < 12
    assert whole["boxes"].tolist() == [[0.0, 0.0, 1.0, 1.0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_crop_border_cuts_objectnets_frame_before_the_crop(tmp_path, backend):
    # ObjectNet's frame: 2 px around an 84-px image; its loader cuts it, then keeps the whole shorter side
    files = [str(framed(tmp_path / "o.png", side=84, width=2))]
    loader = build_loader((files, np.zeros(1, np.int64)), 1, train=False, device="cpu", image_size=16,
                          backend=backend, threads=1, crop_fraction=1.0, crop_border=2)
    batch = next(iter(loader))
    assert np.abs(pixels(batch["images"]) - CENTRE).max() < 12
    assert np.allclose(batch["boxes"].numpy(), [[2 / 84, 2 / 84, 82 / 84, 82 / 84]])


@pytest.mark.parametrize("kwargs, message", [
    (dict(crop_fraction=0), "crop_fraction must be a number in (0, 1], got 0"),
    (dict(crop_fraction=1.5), "got 1.5"),
    (dict(crop_fraction="x"), "got 'x'"),
    (dict(crop_fraction=True), "got True"),
    (dict(crop_fraction=float("nan")), "got nan"),
    (dict(crop_border=-1), "crop_border must be an int in 0..4096, got -1"),
    (dict(crop_border=1.5), "got 1.5"),
    (dict(train=True, crop_fraction=1.0), "evaluation crop (train=False)"),
])
def test_bad_crop_arguments_are_named(tmp_path, kwargs, message):
    files = [str(framed(tmp_path / "a.png"))]
    args = {"train": False, "device": "cpu", "backend": "torchvision", "drop_last": False, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_loader((files, np.zeros(1, np.int64)), 1, **args)


def test_training_crops_are_unchanged_by_the_evaluation_crop(tmp_path):
    files = [str(framed(tmp_path / f"{k}.png")) for k in range(4)]
    a = next(iter(build_loader((files, np.zeros(4, np.int64)), 2, device="cpu", image_size=16, seed=3,
                               backend="torchvision", threads=1)))
    b = next(iter(build_loader((files, np.zeros(4, np.int64)), 2, device="cpu", image_size=16, seed=3,
                               backend="torchvision", threads=1, crop_fraction=None, crop_border=0)))
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["boxes"], b["boxes"])


EXPECTED = {"imagenet": (0.875, 0), "real": (0.875, 0), "v2": (0.875, 0), "multilabel": (0.875, 0),
            "sketch": (0.875, 0), "r": (0.875, 0), "a": (0.875, 0), "imagenet-o": (0.875, 0),
            "objectnet": (1.0, 2), "imagenet-c": (1.0, 0), "si-size": (1.0, 0), "si-location": (1.0, 0),
            "si-rotation": (1.0, 0), "backgrounds": (1.0, 0), "loc": (1.0, 0)}


def test_each_kind_declares_its_protocols_crop_and_crop_pct_overrides_the_fraction_only():
    assert {k: kind.crop(Options()) for k, kind in REGISTRY.items()} == EXPECTED
    assert REGISTRY["objectnet"].crop(Options(crop_fraction=0.875)) == (0.875, 2)
    assert REGISTRY["imagenet"].crop(Options(crop_fraction=1.0)) == (1.0, 0)


@pytest.fixture
def ringed(tmp_path):
    """The same image (class 17's colour, a white ring) in ImageNet-Sketch's and ImageNet-C's folders (one per
    severity): the ColourModel predicts 17 from the centre and another class once the ring is in the mean."""
    for s in range(1, 6):
        framed(tmp_path / "c" / "gaussian_noise" / str(s) / WNIDS[17] / "0.png", centre=colour_of(17),
               ring=(255, 255, 255))
        framed(tmp_path / "sketch" / WNIDS[17] / f"{s}.png", centre=colour_of(17), ring=(255, 255, 255))
    return tmp_path


def _top1(kind: str, path: Path, crop_pct=None) -> float:
    settings = runner.LoaderSettings(batch_size=2, image_size=16, backend="torchvision", threads=1,
                                     crop_fraction=crop_pct)
    split = REGISTRY[kind].read(path, WNIDS, Options(crop_fraction=crop_pct), "s")
    return runner.score(ColourModel(), split, runner.split_loader(split, torch.device("cpu"), settings), 1000)["top1"]


def test_the_runner_decodes_each_split_with_its_kinds_crop(ringed):
    # ImageNet-Sketch: the 87.5% crop drops the ring; ImageNet-C (scored whole, as its test.py does) sees it
    assert _top1("sketch", ringed / "sketch") == 1.0
    assert _top1("imagenet-c", ringed / "c") == 0.0
    # --crop-pct overrides both
    assert _top1("sketch", ringed / "sketch", 1.0) == 0.0
    assert _top1("imagenet-c", ringed / "c", 0.875) == 1.0


@pytest.fixture
def timm_model(tmp_path):
    import timm

    weights = tmp_path / "w.pth"
    torch.save(timm.create_model("resnet10t", num_classes=2).state_dict(), weights)
    cmap = tmp_path / "classes.txt"
    cmap.write_text(f"{WNIDS[0]}\n{WNIDS[17]}\n")
    return ["--model", "resnet10t", "--pretrained-path", str(weights), "--class-map", str(cmap), "--image-size",
            "32", "--device", "cpu", "--backend", "torchvision", "--workers", "1", "--batch-size", "2"]


def _cli_run(argv, monkeypatch, capsys) -> tuple[int, str, list[dict]]:
    """The command's exit status and output, and the keyword arguments of every build_loader call it made."""
    calls = []
    real = runner.build_loader

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "build_loader", spy)
    status = _cli.run(main, argv)
    cap = capsys.readouterr()
    return status, cap.out + cap.err, calls


def test_each_split_gets_its_kinds_crop_in_the_loader_and_results(ringed, timm_model, tmp_path, monkeypatch,
                                                                  capsys):
    out = tmp_path / "out"
    status, text, calls = _cli_run([*timm_model, "--split", f"sk=sketch:{ringed / 'sketch'}",
                                    f"c=imagenet-c:{ringed / 'c'}", "--out", str(out)], monkeypatch, capsys)
    assert status == 0, text
    assert [(c["crop_fraction"], c["crop_border"], c["interpolation"]) for c in calls] == [
        (0.875, 0, "bilinear"), (1.0, 0, "bilinear")]
    splits = json.loads((out / "results.json").read_text())["models"][0]["splits"]
    assert splits["sk"]["transform"] == {"image_size": 32, "crop_fraction": 0.875, "crop_border": 0,
                                         "interpolation": "bilinear"}
    assert splits["c"]["transform"]["crop_fraction"] == 1.0
    md = (out / "results.md").read_text()
    assert "- `sk`: the centre 87.5% of the shorter side (a centred square), bilinear resize" in md
    assert "- `c`: the whole shorter side (a centred square), bilinear resize" in md
    assert "| sk | sketch | transform" not in md  # the record is not a metric row


def test_crop_pct_and_interpolation_reach_every_loader_and_results(ringed, timm_model, tmp_path, monkeypatch,
                                                                   capsys):
    out = tmp_path / "out"
    status, text, calls = _cli_run([*timm_model, "--split", f"sk=sketch:{ringed / 'sketch'}",
                                    f"c=imagenet-c:{ringed / 'c'}", "--crop-pct", "0.95", "--interpolation",
                                    "bicubic", "--out", str(out)], monkeypatch, capsys)
    assert status == 0, text
    assert [(c["crop_fraction"], c["interpolation"]) for c in calls] == [(0.95, "bicubic")] * 2
    splits = json.loads((out / "results.json").read_text())["models"][0]["splits"]
    assert [(s["transform"]["crop_fraction"], s["transform"]["interpolation"]) for s in splits.values()] == \
        [(0.95, "bicubic")] * 2


@pytest.mark.parametrize("value", ["0", "1.5", "x", "nan", "-0.5"])
def test_bad_crop_pct_is_a_usage_error_naming_the_option(timm_model, value, tmp_path, monkeypatch, capsys):
    status, text, calls = _cli_run([*timm_model, "--split", f"s=sketch:{tmp_path}", "--crop-pct", value],
                                   monkeypatch, capsys)
    assert status == 2 and "--crop-pct" in text and f"got {value!r}" in text and "(0, 1]" in text
    assert not calls


def test_bad_interpolation_is_refused_by_name(timm_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*timm_model, "--split", f"s=sketch:{tmp_path}", "--interpolation", "lanczos"])
    assert exc.value.code == 2 and "--interpolation" in capsys.readouterr().err


def test_trainer_val_data_uses_the_kinds_crops(ringed):
    from luab_fast.evaluate.trainer import evaluate_kind, kind_loader

    cfg = SimpleNamespace(batch_size=2, image_size=16, backend="torchvision", workers=1)
    sketch = kind_loader(ringed / "sketch", "sk", "sketch", WNIDS, cfg, torch.device("cpu"))
    corrupt = kind_loader(ringed / "c", "c", "imagenet-c", WNIDS, cfg, torch.device("cpu"))
    assert (sketch.loader.crop_fraction, corrupt.loader.crop_fraction) == (0.875, 1.0)
    assert evaluate_kind(ColourModel(), sketch)["top1"] == 1.0 and evaluate_kind(ColourModel(), corrupt)["top1"] == 0.0


def test_results_md_says_objectnets_border():
    from luab_fast.evaluate import results

    how = {"image_size": 224, "crop_fraction": 1.0, "crop_border": 2, "interpolation": "bicubic"}
    doc = results.document([{"label": "m", "model": "x", "checkpoint": "c", "sha256": "0" * 64, "weights": "model",
                             "splits": {"on": {"kind": "objectnet", "top1": 0.5, "n": 2, "transform": how}}}], "cpu")
    md = results.table(doc)
    assert "- `on`: 2-px border cut off, then the whole shorter side (a centred square), bicubic resize" in md
    assert "| on | objectnet | top1 | 50.00 | 2 |" in md
