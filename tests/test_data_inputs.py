"""Bad data sources give clear errors (ValueError naming the source, the file or the line), never tracebacks
or silently wrong data: layouts without classes, binary or broken list files, unreadable images (up front and
mid-epoch, on both decode backends), and a --demo-root that holds the user's files (never deleted)."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from luab_fast.data import demo as D
from luab_fast.data.loader import build_loader, dali_available
from luab_fast.data.source import list_images


def _jpeg(path, seed: int = 0, size=(40, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def _folder(root, classes=("a", "b"), per_class: int = 3):
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            _jpeg(root / c / f"{c}_{j}.JPEG", seed=10 * k + j)
    return root


# --- layouts and classes -----------------------------------------------------------------------------------

def test_flat_folder_says_it_needs_class_subfolders(tmp_path):
    for j in range(3):
        _jpeg(tmp_path / f"img_{j}.jpg", seed=j)
    with pytest.raises(ValueError, match=r"needs class subfolders.*found 3 image\(s\) at its top level"):
        list_images(tmp_path)


def test_one_class_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"at least 2 classes, got 1: \['only'\]"):
        list_images(_folder(tmp_path / "one", classes=("only",)))
    files = [str(p) for p in sorted(_folder(tmp_path / "two").rglob("*.JPEG"))]
    lst = tmp_path / "same.txt"
    lst.write_text("".join(f"{f} 3\n" for f in files))  # every label the same
    with pytest.raises(ValueError, match=r"at least 2 classes, got 1: \['3'\]"):
        list_images(lst)


def test_classes_without_images_are_kept_listed_and_warned(tmp_path):
    root = _folder(tmp_path / "f", classes=("a", "b"))
    (root / "c").mkdir()
    with pytest.warns(UserWarning, match=r"1 of 3 classes have no images, e\.g\. \['c'\]"):
        images = list_images(root)
    assert images.classes == ("a", "b", "c") and images.empty_classes == ("c",) and len(images) == 6
    files = sorted(root.rglob("*.JPEG"))
    lst = tmp_path / "onebased.txt"  # labels 1 and 3: classes 0 and 2 unused (a subset of a label space)
    lst.write_text("".join(f"{f} {1 if f.parent.name == 'a' else 3}\n" for f in files))
    with pytest.warns(UserWarning, match=r"2 of 4 classes have no images, e\.g\. \['0', '2'\]"):
        images = list_images(lst)
    assert images.empty_classes == ("0", "2") and images.labels.tolist() == [1, 1, 1, 3, 3, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete source warns nothing
        assert list_images(_folder(tmp_path / "ok")).empty_classes == ()


# --- list files --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["jpeg", "random"])
def test_a_binary_file_is_not_a_list(tmp_path, kind):
    path = tmp_path / ("x.JPEG" if kind == "jpeg" else "x.bin")
    if kind == "jpeg":
        _jpeg(path)
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=f"{path} is neither a directory nor a text list of 'path label' lines"):
        list_images(path)


def test_missing_listed_path_names_line_and_resolved_path(tmp_path):
    root = _folder(tmp_path / "imgs")
    lst = tmp_path / "lists" / "train.txt"
    lst.parent.mkdir()
    lst.write_text(f"{root / 'a' / 'a_0.JPEG'} 0\n# a comment\nimgs/b/b_0.JPEG 1\n")  # relative to cwd, not the list
    with pytest.raises(ValueError) as e:
        list_images(lst)
    msg = str(e.value)
    assert "line 3: 'imgs/b/b_0.JPEG'" in msg and os.path.abspath(lst.parent / "imgs/b/b_0.JPEG") in msg
    assert "relative paths are read from the list file's folder" in msg


def test_negative_label_names_the_line(tmp_path):
    root = _folder(tmp_path / "imgs")
    lst = tmp_path / "neg.txt"
    lst.write_text("imgs/a/a_0.JPEG 0\nimgs/b/b_0.JPEG -1\n")
    with pytest.raises(ValueError, match=r"line 2 has label -1"):
        list_images(lst)
    lst.write_text("imgs/a/a_0.JPEG 0\nimgs/b/b_0.JPEG 1\n")
    assert list_images(lst).files == (str(tmp_path / "imgs/a/a_0.JPEG"), str(root / "b/b_0.JPEG"))


# --- unreadable images -------------------------------------------------------------------------------------

def test_unreadable_images_are_named_when_sizes_are_read(tmp_path):
    root = _folder(tmp_path / "f")
    (root / "a" / "zero.JPEG").write_bytes(b"")
    (root / "a" / "text.JPEG").write_text("not an image")
    good = (root / "b" / "b_0.JPEG").read_bytes()
    (root / "b" / "header.JPEG").write_bytes(good[:30])  # cut inside the JPEG header
    with pytest.raises(ValueError) as e:
        build_loader(root, 2, device="cpu", image_size=16, backend="torchvision")
    msg = str(e.value)
    assert msg.startswith("3 of 9 images cannot be read")
    assert all(str(root / f) in msg for f in ("a/zero.JPEG", "a/text.JPEG", "b/header.JPEG"))
    assert "a_0.JPEG" not in msg


def _half_jpeg_folder(tmp_path):
    """Two classes; b/b_1.JPEG keeps its header (its size reads) but loses half its data (its decode fails)."""
    root = _folder(tmp_path / "f", per_class=3)
    bad = root / "b" / "b_1.JPEG"
    _jpeg(bad, seed=99, size=(160, 128))
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) // 2])
    return root, bad


def test_torchvision_decode_error_names_the_file(tmp_path):
    root, bad = _half_jpeg_folder(tmp_path)
    loader = build_loader(root, 2, train=False, device="cpu", image_size=16, backend="torchvision", threads=1)
    with pytest.raises(ValueError, match=rf"image {bad} cannot be decoded"):
        for _ in loader:
            pass


@pytest.mark.skipif(not dali_available(), reason="no DALI")
@pytest.mark.parametrize("batch_size", [3, 4])  # the bad file mid-batch; in a padded partial batch
def test_dali_decode_error_names_the_file(tmp_path, batch_size):
    root, bad = _half_jpeg_folder(tmp_path)
    loader = build_loader(root, batch_size, train=False, device="cpu", image_size=16, backend="dali", threads=1)
    with pytest.raises(ValueError) as e:
        for _ in loader:
            pass
    msg = str(e.value)
    assert f"image {bad} cannot be decoded" in msg and "b_0.JPEG" not in msg and "b_2.JPEG" not in msg


# --- --demo-root -------------------------------------------------------------------------------------------

def _tree(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


@pytest.fixture
def no_generation(monkeypatch):
    """make_demo replaced by a recorder: these tests check what may be replaced, not the generation."""
    calls = []
    monkeypatch.setattr(D, "make_demo", lambda root, *a, **k: calls.append(root) or D.DemoPaths.at(root))
    return calls


@pytest.mark.parametrize("content", ["notes", "imagefolder", "file", "foreign_manifest", "demo_beside_notes"])
def test_demo_root_with_user_content_is_refused_and_kept(tmp_path, no_generation, content):
    root = tmp_path / "mine"
    if content == "file":
        root.write_text("precious")
    elif content == "notes":
        root.mkdir()
        (root / "my_notes.txt").write_text("precious")
    elif content == "imagefolder":  # the demo's own names, but no demo of ours
        _folder(root / "train")
    elif content == "demo_beside_notes":  # an incomplete demo of ours, and the user's notes put beside it
        root.mkdir()
        (root / "manifest.json").write_text(json.dumps({"format": D.FORMAT, "version": 1}))
        (root / "my_notes.txt").write_text("precious")
    else:
        root.mkdir()
        (root / "manifest.json").write_text(json.dumps({"format": "someone.else", "version": 3}))
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match=rf"--demo-root {root} exists and is not \(only\) a luab_fast demo: .*; "
                                         rf"give an empty or new directory"):
        D.ensure_demo(root, seed=0, size="tiny")
    assert _tree(tmp_path) == before and not no_generation


@pytest.mark.parametrize("content", ["new", "empty", "old_version"])
def test_demo_root_that_is_new_empty_or_an_old_demo_is_generated(tmp_path, no_generation, content):
    root = tmp_path / "demo"
    if content != "new":
        root.mkdir()
    if content == "old_version":
        (root / "manifest.json").write_text(json.dumps({"format": D.FORMAT, "version": D.DEMO_VERSION - 1}))
        (root / "train").mkdir()
    D.ensure_demo(root, seed=0, size="tiny")
    assert no_generation == [root]


def test_default_cache_without_manifest_is_still_regenerated(tmp_path, no_generation, monkeypatch):
    monkeypatch.setenv("LUAB_FAST_CACHE", str(tmp_path))
    cache = D.default_cache_dir(0, "tiny")
    cache.mkdir()
    (cache / "leftover").write_text("x")  # the cache directory is luab_fast's own
    D.ensure_demo(seed=0, size="tiny")
    assert no_generation == [cache]
