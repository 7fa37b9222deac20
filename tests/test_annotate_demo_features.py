"""The annotation demo's label-free features (luab_fast/annotate/demo_features.py): never a label read, the same
every time, cached by the images' bytes with the projection's settings, and carrying much more of the class than
the old 16×16 grey levels, before and after the PCA projection."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from luab_fast._cli import DataError
from luab_fast.annotate import demo_features as F
from luab_fast.data import ensure_demo
from luab_fast.data.source import list_images


@pytest.fixture(scope="module")
def tiny():
    """The tiny demo's train split: 200 images of 10 classes (96×96 JPEG)."""
    return list_images(ensure_demo(seed=0, size="tiny").train)


@pytest.fixture(scope="module")
def feats(tiny):
    return F.image_features(tiny.files, workers=1)


def test_shape_dtype_and_determinism(tiny, feats, monkeypatch):
    assert feats.shape == (200, 1764) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert feats.std(0).max() > 0  # not a constant
    np.testing.assert_array_equal(F.image_features(tiny.files[:20], workers=1), feats[:20])
    monkeypatch.setattr(F, "CHUNK", 30)  # 7 chunks over 2 processes: the same rows in the same order
    monkeypatch.setattr(F, "MIN_PARALLEL", 1)
    np.testing.assert_array_equal(F.image_features(tiny.files, workers=2), feats)


def test_no_label_is_read(tiny, feats, tmp_path):
    """The same images under other class folders and names, with no manifest, truth or crowd labels anywhere
    near: the same features, row for row, and the same cache key."""
    rng = np.random.default_rng(0)
    relabel = rng.permutation(10)
    copies = []
    for i, (f, label) in enumerate(zip(tiny.files, tiny.labels)):
        dst = tmp_path / f"class_{relabel[label]}" / f"img{i:03d}.jpeg"
        dst.parent.mkdir(exist_ok=True)
        copies.append(shutil.copyfile(f, dst))
    order = rng.permutation(len(copies))
    got = F.image_features([copies[i] for i in order], workers=1)
    np.testing.assert_array_equal(got, feats[order])
    assert F.content_key(copies) == F.content_key(tiny.files)


def test_cache_is_reused_and_rebuilt_when_stale(tiny, feats, tmp_path, monkeypatch):
    files = [shutil.copyfile(f, tmp_path / f"{i}.jpeg") for i, f in enumerate(tiny.files[:12])]
    cache = F.cache_path(tmp_path / "demo-tiny-seed0")
    assert cache.parent == tmp_path and cache.name == "demo-tiny-seed0.hog-features.npz"
    first = F.demo_features(tmp_path / "demo-tiny-seed0", files)
    assert first.shape == (12, 8)  # 12 rows: 8 components, the largest power of two under their rank 11
    np.testing.assert_array_equal(first, F.reduce_features(feats[:12]))
    assert cache.is_file() and not list(tmp_path.glob(".*tmp*"))
    computed = []
    real = F.image_features
    monkeypatch.setattr(F, "image_features", lambda fs: computed.append(len(fs)) or real(fs, workers=1))
    np.testing.assert_array_equal(F.cached_features(files, cache), first)
    assert computed == []  # reused
    Image.open(tiny.files[50]).save(files[3])  # another image's bytes in row 3
    again = F.cached_features(files, cache)
    hog = real(files, workers=1)
    assert computed == [12] and not np.array_equal(hog[3], feats[3])
    np.testing.assert_array_equal(again, F.reduce_features(hog))
    F.cached_features(files[:11], cache)  # other files: another key
    for setting, value in (("version", F.FEATURES_VERSION + 1), ("pca_dims", F.PCA_DIMS // 2),
                           ("pca", "whitened")):
        monkeypatch.setitem(F.SETTINGS, setting, value)  # another extractor or projection: another key
        F.cached_features(files[:11], cache)
    assert computed == [12, 11, 11, 11, 11]
    cache.write_bytes(b"not an npz")  # torn or foreign: recomputed and replaced
    np.testing.assert_array_equal(F.cached_features(files[:11], cache), F.reduce_features(hog[:11]))
    assert computed == [12, 11, 11, 11, 11, 11]
    with np.load(cache, allow_pickle=False) as z:
        assert str(z["key"]) == F.content_key(files[:11])


def test_unwritable_cache_is_reported_not_fatal(tiny, tmp_path, capsys):
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    got = F.cached_features(tiny.files[:3], blocked / "cache.npz")  # its folder is a file
    assert got.shape == (3, 2)
    assert "could not cache" in capsys.readouterr().err


def test_carries_the_class_better_than_grey_levels(tiny, feats):
    """Nearest class mean under 5-fold cross-validation (true labels used only to score): HOG against the old
    features, 16×16 grey levels."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import NearestCentroid
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    grey = np.stack([np.asarray(Image.open(f).convert("L").resize((16, 16), Image.BILINEAR), np.float32).ravel()
                     for f in tiny.files])

    def score(x):
        return cross_val_score(make_pipeline(StandardScaler(), NearestCentroid()), x, tiny.labels, cv=5).mean()

    hog, pixels, projected = score(feats), score(grey), score(F.reduce_features(feats, 64))
    assert hog > pixels + 0.15, (hog, pixels)
    assert projected > pixels + 0.15, (projected, pixels)


def test_projection(feats):
    """PCA fit on the features alone, rotated to equal column variances: deterministic, the rows' distances
    within the leading components kept, independent of the rows' order (no label or position enters)."""
    from sklearn.decomposition import PCA

    x = F.reduce_features(feats, 64)
    assert x.shape == (200, 64) and x.dtype == np.float32
    np.testing.assert_array_equal(F.reduce_features(feats, 64), x)
    var = x.astype(np.float64).var(0)
    np.testing.assert_allclose(var, var.mean(), rtol=1e-4)  # standardising them scales all alike
    pcs = PCA(64, svd_solver="full").fit_transform(feats.astype(np.float64))
    np.testing.assert_allclose(x @ x.T, pcs @ pcs.T, atol=1e-4 * np.abs(pcs @ pcs.T).max())  # a rotation of them
    centred = feats.astype(np.float64) - feats.mean(0)
    kept = (x.astype(np.float64) ** 2).sum() / (centred ** 2).sum()
    assert 0.5 < kept < 1.0, kept  # most of the variance, not all of it
    order = np.random.default_rng(0).permutation(200)
    shuffled = F.reduce_features(feats[order], 64)
    np.testing.assert_allclose(shuffled @ shuffled.T, (x @ x.T)[np.ix_(order, order)], atol=1e-3 * var.sum())
    assert F.reduce_features(feats).shape == (200, F.PCA_DIMS)
    assert F.reduce_features(feats[:, :5], 64).shape == (200, 4)  # capped at D = 5, down to a power of two
    assert F.reduce_features(feats[:12], 64).shape == (12, 8)  # 12 centred rows span 11 dimensions


def test_bad_inputs(tiny, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"feats must be an array \[N, D\], N >= 2 .* got \(1, 1764\)"):
        F.reduce_features(np.zeros((1, 1764), np.float32))
    with pytest.raises(ValueError, match=r"feats must be an array .* got \(5,\)"):
        F.reduce_features(np.zeros(5, np.float32))
    for dims in (0, 3, 2.0):
        with pytest.raises(ValueError, match=f"dims must be a power of two .*, got {dims!r}"):
            F.reduce_features(np.zeros((5, 3), np.float32), dims)
    with pytest.raises(ValueError, match=r"grey must be a float array \[N, H, W\]"):
        F.hog_features(np.zeros((96, 96), np.float32))
    with pytest.raises(ValueError, match="grey must be a float array"):
        F.hog_features(np.zeros((2, 96, 96), np.uint8))
    with pytest.raises(ValueError, match="at least 24 px"):
        F.hog_features(np.zeros((2, 16, 96), np.float32))
    with pytest.raises(ValueError, match="files must name at least one image"):
        F.image_features([])
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        F.image_features(tiny.files[:2], workers=0)
    text = tmp_path / "notes.jpeg"
    text.write_text("not an image")
    with pytest.raises(DataError, match=f"image {text}: cannot be read"):
        F.image_features([tiny.files[0], text])
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 96)).save(small)
    with pytest.raises(DataError, match=r"small.png is 64×96 px; expected 96×96"):
        F.image_features([tiny.files[0], small])
    monkeypatch.setattr(F, "CHUNK", 1)  # the two images in two chunks: compared after the chunks are done
    with pytest.raises(DataError, match=r"small.png is 64×96 px; expected 96×96"):
        F.image_features([tiny.files[0], small], workers=1)


def test_the_demo_problem_uses_them(tiny, feats):
    from luab_fast.annotate.cli import demo_problem

    x, truth, ids = demo_problem("tiny", 0)
    assert x.shape == (200, F.PCA_DIMS) and x.dtype == np.float32
    projected = F.reduce_features(feats)
    np.testing.assert_allclose(x, (projected - projected.mean(0)) / (projected.std(0) + 1e-6), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_array_equal(truth, tiny.labels)
    assert ids == tiny.stems
