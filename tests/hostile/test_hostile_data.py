"""Hostile input to the data package's public functions (list_images, build_loader, labels_table, make_demo /
ensure_demo): paths the wrong way round, empty and binary files, NaN and huge ids, absurd sizes. Each raises one
ValueError naming the argument or file (a ``DataError`` where the file's content is at fault), never another
exception, and nothing is lost or left behind."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from luab_fast._cli import DataError
from luab_fast.data import demo as D
from luab_fast.data.labels_table import labels_table
from luab_fast.data.loader import build_loader, dali_available
from luab_fast.data.source import MAX_CLASSES, ImageList, list_images

from .conftest import leftovers, snapshot

BACKENDS = ["torchvision"] + (["dali"] if dali_available() else [])


def _jpeg(path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path, quality=90)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder of 2 classes × 3 images."""
    root = tmp_path_factory.mktemp("data") / "f"
    for k, c in enumerate("ab"):
        for j in range(3):
            _jpeg(root / c / f"{c}{j}.jpg", 10 * k + j)
    return root


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# --- list_images: sources the wrong way round, empty, binary, huge ids ----------------------------------------

def _write(path, content) -> object:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


@pytest.mark.parametrize("make, error, fragments", [
    (lambda d, f: f / "a" / "a0.jpg", DataError, ["a0.jpg", "binary, not UTF-8 text"]),  # an image as the list
    (lambda d, f: _write(d / "empty.txt", ""), DataError, ["empty.txt", "holds no images"]),
    (lambda d, f: _write(d / "huge.txt", f"{f}/a/a0.jpg 99999999999999999999\n{f}/b/b0.jpg 1\n"), DataError,
     ["huge.txt", "line 1", f"0..{MAX_CLASSES - 1}"]),
    (lambda d, f: _write(d / "big.txt", f"{f}/a/a0.jpg {MAX_CLASSES}\n{f}/b/b0.jpg 1\n"), DataError,
     ["big.txt", "line 1"]),
    (lambda d, f: _write(d / "dir.txt", f"{f}/a 0\n{f}/b/b0.jpg 1\n"), DataError, ["dir.txt", "line 1", "a folder"]),
    (lambda d, f: _write(d / "neg.txt", f"{f}/a/a0.jpg -3\n"), DataError, ["neg.txt", "line 1", "-3"]),
    (lambda d, f: _write(d / "latin1.txt", "caf\xe9.jpg 0\n".encode("latin-1")), DataError, ["latin1.txt", "binary"]),
    (lambda d, f: (d / "emptydir").mkdir() or d / "emptydir", DataError, ["emptydir", "holds no images"]),
    (lambda d, f: d / "nope", ValueError, ["nope", "does not exist"]),
], ids=["image-as-list", "empty-list", "huge-label", "label-at-cap", "folder-listed", "negative", "latin-1",
        "empty-folder", "missing"])
def test_list_images_refuses_hostile_sources(folder, tmp_path, make, error, fragments):
    source = make(tmp_path, folder)
    before = snapshot(folder)
    with pytest.raises(error) as info:
        list_images(source)
    assert all(f in str(info.value) for f in fragments), str(info.value)
    assert snapshot(folder) == before


def test_files_labels_pair_with_a_huge_id_is_refused(folder):
    files = sorted(str(p) for p in folder.rglob("*.jpg"))
    with pytest.raises(ValueError, match=r"labels must be class ids 0\.\.1048575, got 1099511627776"):
        list_images((files, [0] * (len(files) - 1) + [2 ** 40]))
    with pytest.raises(ValueError, match="labels must be integers"):
        list_images((files, [10 ** 30] * len(files)))


def test_list_file_with_a_label_id_at_the_cap_is_listed(folder, tmp_path):
    """The largest id allowed makes MAX_CLASSES classes, nearly all empty: listed (and warned about) in well
    under a second, not in the hours a quadratic scan of the empty classes took."""
    lst = _write(tmp_path / "cap.txt", f"{folder}/a/a0.jpg 0\n{folder}/b/b0.jpg {MAX_CLASSES - 1}\n")
    with pytest.warns(UserWarning, match=f"{MAX_CLASSES - 2} of {MAX_CLASSES} classes have no images"):
        images = list_images(lst)
    assert len(images.classes) == MAX_CLASSES and images.labels.tolist() == [0, MAX_CLASSES - 1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.tuples(st.sampled_from(["a/a0.jpg", "b/b1.jpg", "a", "nope.jpg", "", "a/a0.jpg x"]),
                                st.one_of(st.integers(-5, 2 ** 70).map(str), st.text(max_size=4))),
                      max_size=6))
def test_list_file_fuzz_parses_or_raises_a_value_error(folder, lines):
    """Any list file either lists existing images with ids below MAX_CLASSES or raises ValueError."""
    path = folder.parent / "fuzz.txt"
    path.write_bytes("".join(f"{folder}/{p} {label}\n" for p, label in lines).encode("utf-8", "surrogatepass"))
    try:
        images = list_images(path)
    except ValueError:
        return
    assert all(os.path.isfile(f) for f in images.files)
    assert len(images.classes) <= MAX_CLASSES and (images.labels >= 0).all()


# --- build_loader: absurd sizes are argument errors, before anything is set up --------------------------------

@pytest.mark.parametrize("kwargs, fragment", [
    (dict(batch_size=2 ** 40), "batch_size 1099511627776 is larger than the 6 images"),
    (dict(batch_size=True), "batch_size must be an int >= 1, got True"),
    (dict(batch_size=0), "batch_size must be an int >= 1, got 0"),
    (dict(image_size=2 ** 40), "image_size must be an int in 8..4096, got 1099511627776"),
    (dict(image_size=4), "image_size must be an int in 8..4096, got 4"),
    (dict(threads=100000), "threads must be an int in 1..1024 or None, got 100000"),
    (dict(threads=0), "threads must be an int in 1..1024 or None, got 0"),
    (dict(seed=-1), "seed must be an int in [0, 2**63 - 1], got -1"),
    (dict(seed=2 ** 64), "seed must be an int in [0, 2**63 - 1], got 18446744073709551616"),
    (dict(crop_scale=(0.5, 0.1)), "crop_scale must be (min, max) with 0 < min <= max <= 1"),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_build_loader_refuses_absurd_arguments(folder, backend, kwargs, fragment):
    args = dict(batch_size=2, train=True, device="cpu", image_size=16, backend=backend) | kwargs
    with pytest.raises(ValueError) as info:
        build_loader(folder, **args)
    assert fragment in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_batch_larger_than_the_data_is_one_batch(folder, backend):
    """drop_last=False takes any batch size: DALI's pipeline is sized to the rows, not to 2**40."""
    loader = build_loader(folder, 2 ** 40, train=False, device="cpu", image_size=16, backend=backend, threads=1)
    (batch,) = list(loader)
    assert batch["images"].shape == (6, 3, 16, 16) and batch["rows"].tolist() == list(range(6))


def test_unreadable_image_is_a_data_error_naming_it(folder, tmp_path):
    import shutil

    data = tmp_path / "f"
    shutil.copytree(folder, data)
    (data / "b" / "b2.jpg").write_bytes(b"")  # zero bytes
    (data / "a" / "a1.jpg").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # a broken header
    with pytest.raises(DataError, match=r"2 of 6 images cannot be read; fix or remove them: .*a1\.jpg.*b2\.jpg"):
        build_loader(data, 2, device="cpu", image_size=16, backend="torchvision")


# --- labels_table: NaN, huge ids, binary and empty files, folders -------------------------------------------

IMAGES = ImageList(("d/a/t0.jpg", "d/b/t1.jpg", "d/a/t2.jpg"), np.array([0, 1, 0]), ("a", "b"))


@pytest.mark.parametrize("content, error, fragments", [
    ("task,label\nt0,0\nt1,\nt2,1\n", DataError, ["label must be a class index", "empty for task t1"]),
    ("task,label\nt0,0\nt1,1e30\nt2,1\n", DataError, ["label must be a class index", "1e+30 for task t1"]),
    ("task,label\nt0,a\nt1,99999999999999999999999\nt2,b\n", DataError, ["'99999999999999999999999' for task t1"]),
    ("task,label\nt0,0\nt1,nan\nt2,1\n", DataError, ["empty for task t1"]),
    ("task,a,b\nt0,0.5,0.5\nt1,inf,0\nt2,1,0\n", DataError, ["finite numbers >= 0", "a=inf for task t1"]),
    ("task,label\nt0,0\nt0,1\nt1,0\nt2,1\n", DataError, ["each task must be listed once", "'t0' 2 times"]),
    (b"\xff\xfe\x00\x01\x89PNG\x00\x00", DataError, ["not a readable CSV"]),
    ("", DataError, ["got an empty file"]),
    (None, ValueError, ["expected a CSV file", "got a directory"]),
], ids=["nan-label", "huge-float", "huge-digits", "nan-text", "inf-posterior", "duplicate", "binary", "empty",
        "folder"])
def test_labels_csv_refuses_hostile_content(tmp_path, content, error, fragments):
    path = tmp_path / "labels.csv"
    if content is None:
        path.mkdir()
    else:
        _write(path, content)
    before = snapshot(tmp_path)
    with pytest.raises(error) as info:
        labels_table(path, IMAGES)
    assert f"--labels {path}" in str(info.value) or f"CSV {path}" in str(info.value)
    assert all(f in str(info.value) for f in fragments), str(info.value)
    assert snapshot(tmp_path) == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=64),
    st.lists(st.tuples(st.sampled_from(["t0", "t1", "t2", "", "x"]),
                       st.one_of(st.sampled_from(["a", "b", "nan", "inf", "-1", "", "1e300", "2" * 25]),
                                 st.integers(-3, 2 ** 64).map(str), st.floats().map(str))),
             max_size=5).map(lambda rows: ("task,label\n" + "".join(f"{t},{v}\n" for t, v in rows)).encode())))
def test_labels_csv_fuzz_parses_or_raises_a_value_error(tmp_path, body):
    """Any file either gives int64 labels of exact, small class ids (one per image) or raises ValueError."""
    path = tmp_path / "fuzz.csv"
    path.write_bytes(body)
    try:
        t = labels_table(path, IMAGES)
    except ValueError:
        return
    assert t.shape[0] == len(IMAGES)
    if t.dim() == 1:
        assert (t.abs() < MAX_CLASSES).all()


# --- make_demo / ensure_demo: arguments, a root that is a file, temporaries, modes ----------------------------

@pytest.mark.parametrize("kwargs, fragment", [
    (dict(annotators=("a", "b")), "annotators must be (lo, hi)"),
    (dict(annotators=(2,)), "annotators must be (lo, hi)"),
    (dict(labels_per_task=2.5), "labels_per_task must be in [1, 10], got 2.5"),
    (dict(correlation="x"), "correlation must be a number, got 'x'"),
    (dict(seed=-1), "seed must be a non-negative int"),
])
def test_demo_arguments_are_checked(tmp_path, kwargs, fragment):
    with pytest.raises(ValueError) as info:
        D.make_demo(tmp_path / "d", size="tiny", **kwargs)
    assert fragment in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_demo_root_that_is_a_file_is_never_replaced(tmp_path):
    root = tmp_path / "mine.txt"
    root.write_text("my notes")
    with pytest.raises(ValueError, match=r"--demo-root .*mine\.txt exists and is not .*: it is a file"):
        D.ensure_demo(root, size="tiny")
    assert root.read_text() == "my notes" and leftovers(tmp_path) == []


def test_demo_root_inside_a_file_is_an_argument_error(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ValueError, match=r"--demo-root .*afile/d/tiny: .*afile is a file, not a folder"):
        D.ensure_demo(tmp_path / "afile" / "d" / "tiny", size="tiny")
    monkeypatch.setenv("LUAB_FAST_CACHE", str(tmp_path / "afile"))  # the default cache under a file
    with pytest.raises(ValueError, match="set LUAB_FAST_CACHE to a folder"):
        D.ensure_demo(size="tiny")
    assert (tmp_path / "afile").read_text() == "mine" and leftovers(tmp_path) == []


def test_a_killed_generations_folder_is_removed_and_the_demo_gets_the_umask_mode(tmp_path, monkeypatch):
    stale = tmp_path / f".d.{_dead_pid()}.abc123.tmp"  # what a SIGKILL during generation leaves
    (stale / "train").mkdir(parents=True)

    def generate(root, p, progress):  # the real one takes seconds; the writes around it are what is tested
        (root / "manifest.json").write_text("{}")

    monkeypatch.setattr(D, "_generate", generate)
    old = os.umask(0o027)
    try:
        paths = D.make_demo(tmp_path / "d", size="tiny")
    finally:
        os.umask(old)
    assert not stale.exists() and leftovers(tmp_path) == []
    assert paths.root.stat().st_mode & 0o777 == 0o750
    assert (paths.root / "manifest.json").stat().st_mode & 0o777 == 0o640


def test_a_failed_generation_leaves_nothing_and_keeps_the_old_demo(tmp_path, monkeypatch):
    root = tmp_path / "d"
    root.mkdir()
    (root / "manifest.json").write_text('{"format": "luab_fast.demo"}')
    before = snapshot(tmp_path)

    def generate(root_, p, progress):
        (root_ / "half").write_text("x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(D, "_generate", generate)
    with pytest.raises(OSError):
        D.make_demo(root, size="tiny", overwrite=True)
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []
