"""Geometric augmentation moves the targets with the pixels (augment_targets.py, the loader, both decoders):
a bright pixel lands where its point lands, the two backends draw the same parameters and give near-equal
pixels, traces and clicks follow the affine, photometric ops leave every target bitwise unchanged, and
training runs with --aa and --reprob."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from luab_fast.byproducts import ByproductStore
from luab_fast.byproducts.targets import to_crop
from luab_fast.data.augment import Augment, Op, Policy, build_augment
from luab_fast.data.augment_targets import apply_affine, pooling_boxes
from luab_fast.data.decode import MEAN, STD, DaliDecoder, TorchvisionDecoder
from luab_fast.data.loader import build_loader
from luab_fast.ops import rasterize_traces

GEOM = Policy("auto", subpolicies=((Op("Rotate", 1.0, 8.0), Op("ShearX", 0.7, 5.0)),
                                   (Op("TranslateXRel", 1.0, 4.0), Op("ShearY", 1.0, 6.0))))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def _unnormalise(x: torch.Tensor) -> np.ndarray:
    return (x * torch.tensor(STD).view(1, 3, 1, 1) * 255 + torch.tensor(MEAN).view(1, 3, 1, 1) * 255).numpy()


def test_a_bright_pixel_moves_where_its_point_moves(tmp_path):
    """One affine per sample, both decoders: the blob's centroid is the point mapped by ``forward``."""
    S, B = 48, 6
    img = np.zeros((60, 80, 3), np.uint8)
    img[20:25, 50:55] = 255  # centre (52.5, 22.5) in pixels
    f = tmp_path / "blob.png"
    Image.fromarray(img).save(f)
    windows = np.tile(np.array([[5, 30, 40, 40]], np.int64), (B, 1))  # y0, x0, h, w: the blob at (22.5, 17.5)
    flips = np.array([0, 1, 0, 1, 0, 1], bool)
    params = Augment(S, GEOM).draw(np.random.default_rng(3), B)
    assert params.inverse is not None
    point = torch.tensor([[(52.5 - 30) / 40, (22.5 - 5) / 40]]).repeat(B, 1)  # crop-normalised, unflipped
    point[:, 0] = torch.where(torch.from_numpy(flips), 1 - point[:, 0], point[:, 0])
    moved = apply_affine(point, torch.from_numpy(params.forward)).numpy() * S  # output pixels
    outs = []
    for dec in (TorchvisionDecoder(S, torch.device("cpu"), 2),
                DaliDecoder(B, S, torch.device("cpu"), 2, 0, warp=True)):
        x = _unnormalise(dec([str(f)] * B, windows, flips, augment=params))
        outs.append(x)
        for b in range(B):
            ys, xs = np.nonzero(x[b, 0] > 200)
            assert len(xs), b
            assert abs(xs.mean() + 0.5 - moved[b, 0]) < 1.0 and abs(ys.mean() + 0.5 - moved[b, 1]) < 1.0, b
    assert np.abs(outs[0] - outs[1]).mean() < 2.0  # near-equal pixels: decoder and filter differences only


def test_backends_draw_equal_parameters_and_near_equal_pixels(demo):
    aug = build_augment(32, "rand-m9-mstd0.5-inc1", reprob=0.25)
    kw = dict(device="cpu", image_size=32, byproducts=demo.store, heat_size=(8, 8), augment=aug, seed=5)
    tv = build_loader(demo.train, 16, backend="torchvision", **kw)
    da = build_loader(demo.train, 16, backend="dali", **kw)
    rows = tv.epoch_rows()[:16]
    a, b = tv.batch(rows, 2), da.batch(rows, 2)
    for k in ("boxes", "flips", "point", "point_weight", "heat", "target"):
        assert torch.equal(a[k], b[k]), k  # the targets depend on the drawn parameters alone
    diff = (a["images"] - b["images"]).abs()
    assert diff.mean() < 0.1, float(diff.mean())  # normalised units: a few uint8 levels on average
    again = tv.batch(rows, 2)
    assert torch.equal(again["images"], a["images"]) and torch.equal(again["heat"], a["heat"])
    assert not torch.equal(tv.batch(rows, 3)["images"], a["images"])


def test_photometric_ops_and_erasing_leave_targets_bitwise_unchanged(demo):
    photo = Policy("rand", tuple(Op(n, 1.0, 9.0) for n in ("Color", "Solarize", "Equalize", "Posterize")), 2)
    kw = dict(device="cpu", image_size=32, byproducts=demo.store, heat_size=(8, 8), backend="torchvision", seed=1)
    plain = build_loader(demo.train, 16, **kw)
    aug = build_loader(demo.train, 16, augment=Augment(32, photo, reprob=1.0, remode="pixel"), **kw)
    rows = plain.epoch_rows()[:16]
    a, b = plain.batch(rows, 0), aug.batch(rows, 0)
    for k in ("boxes", "flips", "point", "point_weight", "heat", "target"):
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["images"], b["images"])


def test_a_click_moved_out_gets_weight_zero(demo):
    loader = build_loader(demo.train, 16, device="cpu", image_size=32, byproducts=demo.store, heat_size=(8, 8),
                          backend="torchvision")
    rows = loader.epoch_rows()[:16]
    batch = loader.batch(rows, 0)
    shift = torch.tensor([[1.0, 0.0, 0.45], [0.0, 1.0, 0.0]]).repeat(16, 1, 1)  # content moves right by 0.45
    inverse = torch.tensor([[1.0, 0.0, -0.45], [0.0, 1.0, 0.0]]).repeat(16, 1, 1)
    got = loader.targets(batch, {"forward": shift, "inverse": inverse, "host_rows": rows,
                                 "to_device": torch.from_numpy})
    had = batch["point_weight"] > 0
    out = had & (batch["point"][:, 0] + 0.45 > 1)
    assert out.any() and (had & ~out).any()
    assert (got["point_weight"][out] == 0).all() and (got["point"][out] == -1).all()
    keep = had & ~out
    assert torch.allclose(got["point"][keep], batch["point"][keep] + torch.tensor([0.45, 0.0]))
    assert (got["point_weight"][keep] == 1).all()


def test_moved_traces_are_the_traces_mapped_by_the_affine(demo):
    """The gathered, moved traces rasterise as each sample's store traces mapped by hand (reference op)."""
    store = ByproductStore.open(demo.store)
    loader = build_loader(demo.train, 8, device="cpu", image_size=32, byproducts=demo.store, heat_size=(8, 8),
                          backend="torchvision", augment=Augment(32, GEOM), seed=2)
    rows = loader.epoch_rows()[:8]
    batch = loader.batch(rows, 1)
    forward = batch["affine"]
    srows = loader.targets.byproducts.host_rows[rows]
    assert (srows >= 0).all() and not torch.allclose(forward, torch.eye(3)[:2].expand(8, 2, 3))
    for b in range(8):
        xy, t = store.trace(int(srows[b]))
        assert len(xy) > 0
        pts = to_crop(torch.tensor(np.asarray(xy, np.float32)), batch["boxes"][b:b + 1].expand(len(xy), 4),
                      batch["flips"][b:b + 1].expand(len(xy)))
        pts = apply_affine(pts, forward[b:b + 1].expand(len(xy), 2, 3))
        raster = loader.targets.byproducts.raster
        lo, hi = int(raster["clicks"][1][srows[b]]), int(raster["clicks"][1][srows[b] + 1])
        cl = to_crop(raster["clicks"][0][lo:hi], batch["boxes"][b:b + 1].expand(hi - lo, 4),
                     batch["flips"][b:b + 1].expand(hi - lo))
        cl = apply_affine(cl, forward[b:b + 1].expand(hi - lo, 2, 3))
        want = rasterize_traces(pts, torch.tensor(np.asarray(t, np.int64)), torch.tensor([0, len(xy)]),
                                torch.tensor([0]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([False]),
                                output_size=(8, 8), weighting="dwell", clicks=(cl, torch.tensor([0, hi - lo])),
                                backend="reference")
        assert torch.allclose(batch["heat"][b], want[0], atol=1e-5 * float(want.max())), b


def _digit_masks(demo, root):
    """An ImageFolder like the demo's training split, each image white inside its digit's box, black elsewhere:
    same classes, stems, order and sizes, so a loader over it draws the same crops and augmentation."""
    from luab_fast.data.source import list_images

    store = ByproductStore.open(demo.store)
    images = list_images(demo.train)
    for f, stem, srow in zip(images.files, images.stems, store.rows(images.stems)):
        with Image.open(f) as im:
            w, h = im.size
        mask = np.zeros((h, w, 3), np.uint8)
        for x0, y0, x1, y1 in (store.boxes(int(srow)) if srow >= 0 else []):
            mask[int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))] = 255
        out = root / Path(f).parent.name / (stem + ".JPEG")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(out, quality=100)
    return root


def test_heat_stays_on_the_augmented_digit(demo, tmp_path):
    """The rendering test on the tiny demo: the digit's pixels in the augmented image are found by decoding
    digit masks with the same draws (not from the targets' affine); the trace heat on them is at least 90% of
    the unaugmented case's, and the trace points land on them."""
    masks = _digit_masks(demo, tmp_path / "masks")
    kw = dict(device="cpu", image_size=32, byproducts=demo.store, heat_size=(16, 16), backend="torchvision", seed=4)
    on_digit = {}
    for name, augment in (("plain", None), ("aug", Augment(32, GEOM))):
        imgs = build_loader(demo.train, 32, augment=augment, **kw)
        mask_loader = build_loader(masks, 32, augment=augment, **kw)
        rows = imgs.epoch_rows()[:32]
        assert [imgs.images.stems[r] for r in rows] == [mask_loader.images.stems[r] for r in rows]
        batch, mask = imgs.batch(rows, 0), mask_loader.batch(rows, 0)
        digit = torch.nn.functional.avg_pool2d(torch.from_numpy(_unnormalise(mask["images"]))[:, :1], 2)[:, 0] > 127
        has = batch["heat"].flatten(1).sum(1) > 0
        on_digit[name] = float((batch["heat"] * digit)[has].sum() / has.sum())
        if augment is not None:
            assert "affine" in batch and not torch.equal(mask["images"], build_loader(masks, 32, **kw).batch(
                rows, 0)["images"])  # the masks did move
    print(f"trace heat on the digit's pixels: {on_digit['plain']:.3f} plain, {on_digit['aug']:.3f} augmented")
    assert on_digit["plain"] > 0.3  # the traces lie on the digits: the check is not vacuous
    assert on_digit["aug"] >= 0.9 * on_digit["plain"]


def test_label_map_pooling_boxes():
    boxes = torch.tensor([[0.2, 0.1, 0.6, 0.5], [0.2, 0.1, 0.6, 0.5]])
    flips = torch.tensor([False, True])
    ident = torch.eye(3)[:2].repeat(2, 1, 1)
    assert torch.allclose(pooling_boxes(boxes, flips, ident), boxes)
    shift = torch.tensor([[1.0, 0.0, -0.25], [0.0, 1.0, 0.0]]).repeat(2, 1, 1)  # output x samples crop x − 0.25
    got = pooling_boxes(boxes, flips, shift)
    assert torch.allclose(got[0], torch.tensor([0.2, 0.1, 0.5, 0.5]))  # crop u in [0, 0.75] shown
    assert torch.allclose(got[1], torch.tensor([0.3, 0.1, 0.6, 0.5]))  # flipped: the other side of the image


def test_training_runs_with_aa_and_random_erasing(demo, tmp_path):
    from luab_fast.train.run import main

    args = ["--data", str(demo.train), "--device", "cpu", "--backend", "torchvision", "--batch-size", "16",
            "--image-size", "32", "--no-compare", "--byproducts", str(demo.store), "--max-steps", "2"]
    assert main([*args, "--out", str(tmp_path / "a"), "--aa", "rand-m9-mstd0.5", "--reprob", "0.25"]) == 0
    assert (tmp_path / "a" / "metrics.json").exists()


def test_cli_refuses_a_bad_spec(demo, tmp_path, capsys):
    from luab_fast.train.run import main

    assert main(["--data", str(demo.train), "--out", str(tmp_path / "b"), "--aa", "rand-q9"]) == 2
    assert "--aa: unknown RandAugment section 'q9'" in capsys.readouterr().err


@pytest.mark.parametrize("name,arg", [("Brightness", 1.6), ("BrightnessIncreasing", 0.4), ("Color", 0.3),
                                      ("Contrast", 1.7), ("Sharpness", 1.9), ("Posterize", 2.0),
                                      ("Solarize", 100.0), ("SolarizeAdd", 60.0), ("Invert", 0.0),
                                      ("Equalize", 0.0), ("AutoContrast", 0.0)])
def test_dali_pipeline_ops_equal_the_torch_ops(tmp_path, name, arg):
    """Each photometric op as DALI runs it in the pipeline and as torch runs it after PIL's decode: on a lossless
    image at its own size (no resampling), equal within one uint8 level."""
    from luab_fast.data.augment import AugmentParams

    S, B = 24, 3
    img = np.random.default_rng(1).integers(20, 200, (S, S, 3), dtype=np.uint8)  # not full range: autocontrast
    img[:, :4] = img[:, :4] // 3  # some structure for equalize / sharpness
    f = tmp_path / "noise.png"
    Image.fromarray(img).save(f)
    windows = np.tile(np.array([[0, 0, S, S]], np.int64), (B, 1))
    names = np.array([name, "", name], object)  # the middle sample has no op in this layer
    params = AugmentParams(None, [(names, np.full(B, arg))], None)
    flips = np.zeros(B, bool)
    tv = _unnormalise(TorchvisionDecoder(S, torch.device("cpu"), 2)([str(f)] * B, windows, flips, augment=params))
    da = _unnormalise(DaliDecoder(B, S, torch.device("cpu"), 2, 0, photo_layers=1)([str(f)] * B, windows, flips,
                                                                                  augment=params))
    if name == "Equalize":  # DALI's equalize is OpenCV's equalizeHist, not PIL's (timm's): compare with that
        tv[[0, 2]] = np.stack([_equalize_hist(img[..., c]) for c in range(3)])[None]
    assert np.abs(tv - da).max() <= 1.01, (name, float(np.abs(tv - da).max()))
    assert np.abs(tv[1] - img.transpose(2, 0, 1)).max() < 0.01  # no op: the image as it is
    if name != "Brightness" or arg != 1.0:
        assert np.abs(tv[0] - img.transpose(2, 0, 1)).max() > 1  # the op did something


def _equalize_hist(channel: np.ndarray) -> np.ndarray:
    """OpenCV's equalizeHist: lut = round((cdf − cdf[first]) · 255 / (total − hist[first]))."""
    hist = np.bincount(channel.ravel(), minlength=256)
    first = np.flatnonzero(hist)[0]
    if hist[first] == channel.size:
        return channel.astype(float)
    cdf = np.cumsum(hist)
    return np.clip(np.round((cdf - cdf[first]) * 255.0 / (channel.size - hist[first])), 0, 255)[channel]
