"""--ratio, --interpolation and --color-jitter (augment.py, crops, decoders): the crop aspect range, the resize
filter in both backends, timm's colour jitter (torchvision's ColorJitter, off under --aa) leaving targets alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as tvf
from PIL import Image

from luab_fast.data.augment import Augment, AugmentParams, build_augment
from luab_fast.data.augment_ops import photometric
from luab_fast.data.loader import build_loader
from luab_fast.train.run import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def test_crop_ratio_sets_the_windows_aspect(demo):
    loader = build_loader(demo.train, 32, device="cpu", image_size=16, backend="torchvision", crop_ratio=(2.0, 2.0),
                          crop_scale=(0.2, 0.4))
    batch = loader.batch(loader.epoch_rows()[:32], 0)
    b, hw = batch["boxes"].double(), batch["sizes"].double()
    aspect = (b[:, 2] - b[:, 0]) * hw[:, 1] / ((b[:, 3] - b[:, 1]) * hw[:, 0])
    assert torch.allclose(aspect, torch.full_like(aspect, 2.0), rtol=0.15)  # up to integer rounding
    with pytest.raises(ValueError, match="crop_ratio"):
        build_loader(demo.train, 2, device="cpu", crop_ratio=(2.0, 1.0))


def test_interpolation_in_both_backends(demo):
    kw = dict(device="cpu", image_size=24, seed=3)
    rows = None
    got = {}
    for backend in ("torchvision", "dali"):
        for interp in ("bilinear", "bicubic", "nearest"):
            loader = build_loader(demo.train, 16, backend=backend, interpolation=interp, **kw)
            rows = loader.epoch_rows()[:16] if rows is None else rows
            got[backend, interp] = loader.batch(rows, 0)["images"]
    assert not torch.equal(got["torchvision", "bilinear"], got["torchvision", "bicubic"])
    assert not torch.equal(got["torchvision", "bilinear"], got["torchvision", "nearest"])
    for interp in ("bilinear", "bicubic"):  # nearest picks different pixels when the scale is not an integer
        diff = (got["torchvision", interp] - got["dali", interp]).abs().mean()
        other = (got["torchvision", interp] - got["dali", "nearest"]).abs().mean()
        assert diff < 0.1 and diff < other, (interp, float(diff), float(other))
    with pytest.raises(ValueError, match="interpolation"):
        build_loader(demo.train, 2, device="cpu", interpolation="lanczos")


def test_color_jitter_is_torchvisions_and_leaves_targets(demo):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    order, factors = np.array([[2, 0, 1]]), np.array([[1.3, 0.7, 0.5]])  # saturation, brightness, contrast
    want = Image.fromarray(img)
    for k in order[0]:
        fn = (tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation)[k]
        want = fn(want, float(factors[0, k]))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    layers = [(np.array([("Brightness", "Contrast", "Color")[k]], object), factors[0, [k]]) for k in order[0]]
    got = photometric(x, AugmentParams(None, layers, None), torch.from_numpy)[0].permute(1, 2, 0)
    assert (got.numpy() - np.asarray(want).astype(float)).__abs__().max() <= 1.0

    kw = dict(device="cpu", image_size=32, byproducts=demo.store, heat_size=(8, 8), backend="torchvision", seed=1)
    plain = build_loader(demo.train, 16, **kw)
    jitter = build_loader(demo.train, 16, augment=build_augment(32, color_jitter=0.4), **kw)
    rows = plain.epoch_rows()[:16]
    a, b = plain.batch(rows, 0), jitter.batch(rows, 0)
    assert not torch.equal(a["images"], b["images"])
    for k in ("point", "point_weight", "heat", "target", "boxes"):
        assert torch.equal(a[k], b[k]), k
    # as timm's create_transform: colour jitter is off under --aa
    under_aa = build_augment(32, "rand-m9", color_jitter=0.4)
    assert not under_aa.jitter and len(under_aa.draw(np.random.default_rng(0), 4).photo) == 2  # RandAugment's 2
    alone = Augment(32, color_jitter=0.4).draw(np.random.default_rng(0), 4).photo
    assert len(alone) == 3 and all(set(names) <= {"Brightness", "Contrast", "Color"} for names, _ in alone)
    assert all(sorted(names[b] for names, _ in alone) == ["Brightness", "Color", "Contrast"] for b in range(4))


@pytest.mark.parametrize("extra,message", [(["--ratio", "2", "1"], "--ratio: expected two aspect ratios"),
                                           (["--reprob", "2"], "--reprob: expected a probability"),
                                           (["--recount", "0"], "--recount: expected an int in 1..16")])
def test_cli_refuses_bad_values(demo, tmp_path, capsys, extra, message):
    assert main(["--data", str(demo.train), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err
