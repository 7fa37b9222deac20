"""--aa and its friends (luab_fast/data/augment.py, augment_ops.py): timm's specs read off timm's own objects,
timm's level functions, the geometric ops' matrices against timm's PIL ops, seeded draws, bad specs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment as taa

from luab_fast._cli import UsageError
from luab_fast.data.augment import GEOMETRIC, Augment, Op, Policy, build_augment, level_arg, op_inverse, parse_aa
from luab_fast.data.augment_ops import erase, photometric


def test_rand_spec_has_timms_ops_and_magnitudes():
    p = parse_aa("rand-m9-mstd0.5-inc1", 224)
    assert [o.name for o in p.ops] == taa._RAND_INCREASING_TRANSFORMS  # inc1: timm's increasing set
    assert {(o.prob, o.magnitude, o.magnitude_std) for o in p.ops} == {(0.5, 9.0, 0.5)}
    assert p.layers == 2 and p.weights is None and p.hparams["translate_const"] == int(224 * 0.45)
    q = parse_aa("rand-m7-n3-p0.8-mmax12", 64)
    assert [o.name for o in q.ops] == taa._RAND_TRANSFORMS
    assert (q.layers, q.ops[0].prob, q.ops[0].magnitude, q.ops[0].magnitude_max) == (3, 0.8, 7.0, 12.0)
    w = parse_aa("rand-m9-tweights", 64)
    assert w.weights is not None and abs(sum(w.weights) - 1) < 1e-9


@pytest.mark.parametrize("name", ["original", "v0", "originalr", "v0r"])
def test_autoaugment_policies_are_timms(name):
    p = parse_aa(f"{name}-mstd0.5", 224)
    expected = [[(o.name, o.prob, o.magnitude) for o in sub]
                for sub in taa.auto_augment_policy(name, dict(translate_const=100, img_mean=(0, 0, 0)))]
    assert [[(o.name, o.prob, o.magnitude) for o in sub] for sub in p.subpolicies] == expected
    assert {o.magnitude_std for sub in p.subpolicies for o in sub} == {0.5}


@pytest.mark.parametrize("name", sorted(set(taa._RAND_TRANSFORMS) | set(taa._RAND_INCREASING_TRANSFORMS) |
                                        {"TranslateX", "PosterizeOriginal"}))
def test_level_args_are_timms(name):
    """Each op's argument at magnitudes 0..10: one of timm's (its sign timm draws at random, this module too)."""
    hp = dict(translate_const=100, img_mean=(0, 0, 0))
    mags = np.linspace(0, 10, 11)
    ours = {s: level_arg(name, mags, np.full(11, s), hp) for s in (1.0, -1.0)}
    fn = taa.LEVEL_TO_ARG[name]
    random.seed(0)
    for i, m in enumerate(mags):
        if fn is None:
            assert ours[1.0][i] == 0
            continue
        timm_values = {round(float(fn(float(m), hp)[0]), 9) for _ in range(40)}  # both signs, where random
        assert timm_values == {round(float(ours[s][i]), 9) for s in (1.0, -1.0)}, (name, m)


def _bright_pixel(size=33, at=(10, 5)):
    img = np.zeros((size, size, 3), np.uint8)
    img[at[1] - 1:at[1] + 2, at[0] - 1:at[0] + 2] = 255  # 3×3: a rotation sampling to nearest keeps some of it
    return Image.fromarray(img)


def _peak(im) -> np.ndarray:
    """The bright blob's centroid (x, y) in pixels."""
    a = np.asarray(im)[..., 0].astype(float)
    ys, xs = np.nonzero(a > 127)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("name,arg", [("Rotate", 25.0), ("Rotate", -40.0), ("ShearX", 0.25), ("ShearY", -0.2),
                                      ("TranslateXRel", 0.3), ("TranslateYRel", -0.2), ("TranslateX", 7.0)])
def test_op_matrix_moves_a_pixel_as_timms_pil_op(name, arg):
    """timm's own op on a PIL image moves a bright pixel where the forward matrix moves its point."""
    S = 33
    im = _bright_pixel(S)
    fn = taa.NAME_TO_OP[name]
    out = fn(im, arg, resample=Image.NEAREST, fillcolor=(0, 0, 0))
    inverse = op_inverse(name, np.array([arg]), S)
    forward = np.linalg.inv(inverse[0])
    u = (np.array([10, 5]) + 0.5) / S  # the pixel's centre, crop-normalised
    moved = (forward[:2, :2] @ u + forward[:2, 2]) * S - 0.5
    assert np.abs(_peak(out) - moved).max() <= 1.0, (name, _peak(out), moved)


def test_draws_are_seeded_and_composed_in_layer_order():
    aug = build_augment(64, "rand-m9-mstd0.5-inc1", reprob=0.5, recount=2)
    a = aug.draw(np.random.default_rng([1, 2, 0, 3]), 32)
    b = aug.draw(np.random.default_rng([1, 2, 0, 3]), 32)
    c = aug.draw(np.random.default_rng([1, 2, 0, 4]), 32)
    assert np.array_equal(a.inverse, b.inverse) and np.array_equal(a.erase, b.erase)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a.photo, b.photo))
    assert not np.array_equal(a.inverse, c.inverse)
    # two geometric layers compose as timm applies them: img2(x) = img0(N1 · N2 · x)
    pol = Policy("auto", subpolicies=((Op("Rotate", 1.0, 10.0), Op("ShearX", 1.0, 10.0)),))
    one = Augment(64, pol).draw(np.random.default_rng(0), 50)
    def rot(r):
        return op_inverse("Rotate", np.array([r]), 64)[0]

    def shear(f):
        return op_inverse("ShearX", np.array([f]), 64)[0]

    for inv in one.inverse:
        match = [(r, f) for r in (30.0, -30.0) for f in (0.3, -0.3) if np.allclose(inv, rot(r) @ shear(f))]
        assert len(match) == 1
        assert not np.allclose(inv, shear(match[0][1]) @ rot(match[0][0]))  # the order matters: timm's
    assert a.erase.shape == (32, 2, 4) and ((a.erase[..., 2] == 0) == (a.erase[..., 3] == 0)).all()


def test_photometric_ops_follow_pil():
    """Brightness / Color / Contrast / Sharpness / Posterize / Solarize / Invert as timm's PIL ops."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    im = Image.fromarray(img)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    cases = [("Brightness", 1.6), ("Color", 0.3), ("Contrast", 1.7), ("Sharpness", 1.9), ("Posterize", 2),
             ("Solarize", 100), ("SolarizeAdd", 60), ("Invert", 0), ("Equalize", 0), ("AutoContrast", 0)]
    for name, arg in cases:
        fn = taa.NAME_TO_OP[name]
        want = np.asarray(fn(im, arg) if taa.LEVEL_TO_ARG[name] else fn(im)).astype(float)
        from luab_fast.data.augment import AugmentParams

        params = AugmentParams(None, [(np.array([name], object), np.array([float(arg)]))], None)
        got = photometric(x.clone(), params, torch.from_numpy)[0].permute(1, 2, 0).numpy()
        assert np.abs(got - want).max() <= 1.0, name


def test_random_erasing_fills_the_drawn_boxes():
    aug = build_augment(16, None, reprob=1.0, remode="const", recount=1)
    p = aug.draw(np.random.default_rng(0), 4)
    x = torch.ones(4, 3, 16, 16)
    out = erase(x, p, "const", torch.from_numpy)
    for b in range(4):
        t, left, h, w = p.erase[b, 0]
        assert h > 0 and (out[b, :, t:t + h, left:left + w] == 0).all()
        assert out[b].eq(0).sum() == 3 * h * w
    px = erase(torch.ones(4, 3, 16, 16), p, "pixel", torch.from_numpy)
    assert px[0, :, p.erase[0, 0, 0], p.erase[0, 0, 1]].ne(1).all()


@pytest.mark.parametrize("spec,match", [
    ("rand-x9", "unknown RandAugment section 'x9'"), ("foo", "not a timm RandAugment"),
    ("augmix-m5", "AugMix"), ("trivial", "timm has no TrivialAugment"), ("v0-zz3", "not a timm"),
    ("rand-m9-t3a", "ops this loader does not run: Desaturate, GaussianBlur"), ("", "expected a timm"),
])
def test_bad_specs_name_the_flag(spec, match):
    with pytest.raises(UsageError, match=match) as e:
        build_augment(64, spec if spec else " ")
    assert str(e.value).startswith("--aa:")


@pytest.mark.parametrize("kw,flag", [(dict(reprob=1.5), "--reprob"), (dict(remode="x"), "--remode"),
                                     (dict(recount=0), "--recount"), (dict(color_jitter=-1), "--color-jitter"),
                                     (dict(interpolation="lanczos"), "--interpolation")])
def test_bad_values_name_the_flag(kw, flag):
    with pytest.raises(UsageError, match=flag):
        build_augment(64, **kw)


def test_geometric_names_are_timms():
    assert set(GEOMETRIC) <= set(taa.NAME_TO_OP)
