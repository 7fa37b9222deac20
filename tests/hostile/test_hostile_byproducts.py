"""Hostile input to ``python -m luab_fast.byproducts`` and to the byproduct stores' Python API (issue 17).

A pack that finds nothing valid fails (exit 1) and a pack with problems never replaces an existing store unless
``--replace-with-problems``; the old store comes out byte for byte and nothing temporary is left. A member that
fails (a bad value, a duplicate id, an oversized member) is a problem naming it. A store whose arrays contradict
each other (even with consistently rewritten checksums) is "damaged" at open / ``info --verify``, never an
IndexError deep inside. Stores and figures get the umask's mode.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.coco_ab import write_coco_ab_fixture
from fixtures.imagenet_ab import file_elements, random_record, serialize, write_imagenet_ab_fixture

from luab_fast._store.format import MANIFEST, _manifest_digest
from luab_fast.byproducts import ByproductStore, CocoByproductStore, StoreError, read_imagenet_ab
from luab_fast.byproducts import imagenet_ab as imagenet_ab_module

from .conftest import leftovers, snapshot


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def _xml(stem: str, wnid: str, seed: int = 0, **overrides) -> bytes:
    rec = random_record(random.Random(seed), ["A1B2C3D4E5"])
    rec.update(overrides)
    return serialize(file_elements(stem, wnid, [rec]), pretty=False)


@pytest.fixture
def work(tmp_path: Path, cli) -> Path:
    """The release fixture, a good ImageNet-AB store S.store and a good COCO-AB store C.store packed from it."""
    fx = write_imagenet_ab_fixture(tmp_path / "fx")
    coco = write_coco_ab_fixture(tmp_path / "fx")
    cli("byproducts", "pack", fx["tar"], tmp_path / "S.store", "--quiet").ok()
    cli("byproducts", "pack", coco["path"], tmp_path / "C.store", "--quiet").ok()
    (tmp_path / "fx" / "coco_ab_fixture.json").rename(tmp_path / "coco.json")
    return tmp_path


def _rewrite_consistently(store: Path, name: str, arr: np.ndarray) -> None:
    """Replaces one array and rewrites its manifest entry and the manifest checksum to match, as an edit that
    knows the format would: only the arrays' agreement with each other can tell."""
    np.save(store / f"{name}.npy", arr, allow_pickle=False)
    doc = json.loads((store / MANIFEST).read_text())
    digest = hashlib.blake2b((store / f"{name}.npy").read_bytes(), digest_size=16).hexdigest()
    doc["arrays"][name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "blake2b": digest}
    body = {k: doc[k] for k in ("format", "version", "arrays", "meta")}
    doc["manifest_blake2b"] = _manifest_digest(body)
    (store / MANIFEST).write_text(json.dumps(doc))


# --- pack: nothing valid, or problems over an existing store ----------------------------------------------------

BAD_IMAGENET_SOURCES = {
    "empty .tar.gz": lambda d: _write(d / "e.tar.gz", b""),
    "truncated .tar.gz": lambda d: _write(d / "t.tar.gz", (d / "fx" / "imagenet_ab_fixture.tar.gz").read_bytes()[:90]),
    "text named .tar.gz": lambda d: _write(d / "x.tar.gz", b"hello, not an archive\n"),
    "gzip of garbage": lambda d: _write(d / "g.tar.gz", gzip.compress(bytes(range(256)) * 8)),
    "corrupt gzip body": lambda d: _write(d / "c.tar.gz", b"\x1f\x8b\x08\x00" + bytes(200)),
    "empty folder": lambda d: _mkdir(d / "empty"),
    "folder of non-xml": lambda d: _write(_mkdir(d / "junk") / "n1" / "a.txt", b"x").parent.parent,
}


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
@pytest.mark.parametrize("kind", list(BAD_IMAGENET_SOURCES))
def test_pack_of_nothing_valid_fails_and_keeps_the_store(work, cli, kind, strict):
    src = BAD_IMAGENET_SOURCES[kind](work)
    before = snapshot(work / "S.store")
    args = ["--strict"] if strict else []
    r = cli("byproducts", "pack", src, work / "S.store", "--quiet", *args)
    if strict:
        r.failed_with(1, src.name)  # the first problem (or "no valid files"), naming the source, stops it
    else:
        r.failed_with(1, str(src), "no valid imagenet-ab files", "s.store was left as it is", "expected")
    assert snapshot(work / "S.store") == before and not leftovers(work)


@pytest.mark.parametrize("text,fragment", [
    ('[{"image_id": 1', "no valid coco-ab records"),
    ("{}", "no valid coco-ab records"),
    ("[]", "no valid coco-ab records"),
    ('[{"image_id": "one"}]', "no valid coco-ab records"),
    ("", "no valid coco-ab records"),
], ids=["truncated", "object", "empty array", "bad record", "empty file"])
def test_coco_pack_of_nothing_valid_fails_and_keeps_the_store(work, cli, text, fragment):
    src = _write(work / "bad.json", text.encode())
    before = snapshot(work / "C.store")
    cli("byproducts", "pack", src, work / "C.store", "--quiet").failed_with(1, "bad.json", fragment, "left as it is")
    assert snapshot(work / "C.store") == before and not leftovers(work)


def test_pack_a_store_onto_itself_is_refused(work, cli):
    before = snapshot(work)
    cli("byproducts", "pack", work / "S.store", work / "S.store", "--quiet").failed_with(2, "is a packed store")
    rel = work / "fx" / "release"
    cli("byproducts", "pack", rel, rel, "--quiet").failed_with(2, "DST", "is SRC")
    assert snapshot(work) == before


def _partial_tar(work: Path) -> Path:
    """Two good files and one broken one."""
    return _tar(work / "partial.tar.gz", [("train_xml/n01/n01_1.xml", _xml("n01_1", "n01", 1)),
                                          ("train_xml/n01/n01_2.xml", b"<annotation><filename>n01_2</filen"),
                                          ("train_xml/n01/n01_3.xml", _xml("n01_3", "n01", 3))])


def test_pack_with_problems_keeps_an_existing_store_unless_told(work, cli):
    src = _partial_tar(work)
    before = snapshot(work / "S.store")
    cli("byproducts", "pack", src, work / "S.store", "--quiet").failed_with(
        1, "1 problem(s)", "n01_2.xml", "left as it is", "--replace-with-problems")
    assert snapshot(work / "S.store") == before and not leftovers(work)
    r = cli("byproducts", "pack", src, work / "S.store", "--quiet", "--replace-with-problems").ok()
    assert "packed 2 files" in r.out and "n01_2.xml" in r.out
    assert sorted(ByproductStore.open(work / "S.store").ids) == ["n01_1", "n01_3"] and not leftovers(work)
    # into a new path a partial pack is fine: the problems are listed
    assert "1 problem(s) skipped" in cli("byproducts", "pack", src, work / "new.store", "--quiet").ok().out


def test_coco_pack_with_problems_keeps_an_existing_store(work, cli):
    records = json.loads((work / "coco.json").read_text())
    records[1]["mouseTracking"] = "not a list"
    src = _write(work / "partial.json", json.dumps(records).encode())
    before = snapshot(work / "C.store")
    cli("byproducts", "pack", src, work / "C.store", "--quiet").failed_with(
        1, "record 1", "mouseTracking", "--replace-with-problems")
    assert snapshot(work / "C.store") == before and not leftovers(work)


@pytest.mark.parametrize("layout", ["same path twice", "two wnid folders"])
def test_duplicate_ids_keep_the_first_and_name_both_members(work, cli, layout):
    second = "train_xml/n01/n01_1.xml" if layout == "same path twice" else "train_xml/n02/n01_1.xml"
    src = _tar(work / "dup.tar.gz", [("train_xml/n01/n01_1.xml", _xml("n01_1", "n01", 1)),
                                     (second, _xml("n01_1", "n01", 2)),
                                     ("train_xml/n01/n01_3.xml", _xml("n01_3", "n01"))])
    r = cli("byproducts", "pack", src, work / "dup.store", "--quiet").ok()
    assert "duplicate image id 'n01_1'" in r.out and second in r.out and "train_xml/n01/n01_1.xml" in r.out
    store = ByproductStore.open(work / "dup.store")
    assert sorted(store.ids) == ["n01_1", "n01_3"]
    one = _tar(work / "one.tar.gz", [("train_xml/n01/n01_1.xml", _xml("n01_1", "n01", 1))])
    cli("byproducts", "pack", one, work / "one.store", "--quiet").ok()
    first = ByproductStore.open(work / "one.store")
    np.testing.assert_array_equal(store.trace(store.row("n01_1"))[0], first.trace(0)[0])  # the first one won
    cli("byproducts", "pack", src, work / "strict.store", "--quiet", "--strict").failed_with(
        1, "duplicate image id 'n01_1'", second)
    assert not (work / "strict.store").exists() and not leftovers(work)


@pytest.mark.parametrize("bad", ["non-ascii worker", "non-ascii file name", "int32 overflow", "malformed"])
def test_one_bad_member_among_201_is_a_problem_naming_it(work, cli, bad):
    members = [(f"train_xml/n01/n01_{i}.xml", _xml(f"n01_{i}", "n01", i)) for i in range(200)]
    name, data = {
        "non-ascii worker": ("train_xml/n01/n01_900.xml", _xml("n01_900", "n01", worker_id="Jörg-Ångström")),
        "non-ascii file name": ("train_xml/n01/n01_ä.xml", _xml("n01_ä", "n01")),
        "int32 overflow": ("train_xml/n01/n01_900.xml", _xml("n01_900", "n01", page_idx=2**40)),
        "malformed": ("train_xml/n01/n01_900.xml", b"<annotation><filename>n01_900</filename><metadata><x>"),
    }[bad]
    src = _tar(work / "many.tar.gz", members[:100] + [(name, data)] + members[100:])
    r = cli("byproducts", "pack", src, work / "many.store", "--quiet").ok()
    store = ByproductStore.open(work / "many.store")
    if bad == "non-ascii worker":  # free text: stored as UTF-8, read back as it was
        assert len(store) == 201 and "problem" not in r.out
        row = store.row("n01_900")
        rec = store.arrays["rec_worker"][store.arrays["rec_offsets"][row]]
        assert store.arrays["workers"][rec].decode() == "Jörg-Ångström"
    else:
        assert len(store) == 200 and "1 problem(s) skipped" in r.out and name in r.out
        cli("byproducts", "pack", src, work / "strict.store", "--quiet", "--strict").failed_with(1, name)
    assert not leftovers(work)


@pytest.mark.parametrize("where", ["tar", "folder"])
def test_an_oversized_member_is_skipped_unread_and_named(work, cli, monkeypatch, where):
    monkeypatch.setattr(imagenet_ab_module, "MAX_MEMBER_BYTES", 64 << 10)  # the real cap is 16 MiB
    huge = b"<annotation>" + b" " * (1 << 20) + b"</annotation>"
    good = [("train_xml/n01/n01_1.xml", _xml("n01_1", "n01")), ("train_xml/n01/n01_3.xml", _xml("n01_3", "n01"))]
    if where == "tar":
        src = _tar(work / "big.tar.gz", [good[0], ("train_xml/n01/n01_2.xml", huge), good[1]])
    else:
        src = work / "bigdir"
        for name, data in [good[0], ("train_xml/n01/n01_2.xml", huge), good[1]]:
            _write(src / name, data)
    reads = []
    real = imagenet_ab_module.parse_xml_reference
    monkeypatch.setattr(imagenet_ab_module, "parse_xml_reference", lambda d, n="": reads.append(len(d)) or real(d, n))
    r = cli("byproducts", "pack", src, work / "big.store", "--quiet").ok()
    assert "n01_2.xml" in r.out and "larger than any imagenet-ab file" in r.out.lower()
    assert sorted(ByproductStore.open(work / "big.store").ids) == ["n01_1", "n01_3"]
    assert all(n < 64 << 10 for n in reads)
    cli("byproducts", "pack", src, work / "strict.store", "--quiet", "--strict").failed_with(1, "n01_2.xml", "bytes")


def test_a_huge_long_name_header_is_refused_not_read(work, cli):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("train_xml/n01/" + "a" * 200 + ".xml")
        tf.addfile(ti, io.BytesIO(b""))
    raw = bytearray(buf.getvalue())
    raw[124:136] = b"%011o\0" % (2 << 20)  # the ././@LongLink header now claims a 2 MiB name
    raw[148:156] = b"        "
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    src = _write(work / "longname.tar.gz", gzip.compress(bytes(raw)))
    cli("byproducts", "pack", src, work / "S.store", "--quiet").failed_with(1, "long name or pax header", "left as")


# --- stores: damaged contents ----------------------------------------------------------------------------------

SHRINK = ["trace_xy", "trace_t", "rec_worker", "boxes", "click_t", "ids", "rec_offsets", "hover_enter", "size"]


@pytest.mark.parametrize("name", SHRINK)
def test_a_shrunk_array_with_a_consistent_manifest_is_damaged(work, cli, name):
    store = work / "S.store"
    arr = np.load(store / f"{name}.npy")
    _rewrite_consistently(store, name, arr[:-1])
    with pytest.raises(StoreError, match=rf"{store} is damaged \(.*{name}.*\): re-pack it or run info --verify"):
        ByproductStore.open(store)
    cli("byproducts", "info", store, "--verify").failed_with(1, str(store), "is damaged", name)
    cli("byproducts", "show", store, "n01440764_18", "--out", work / "f.png").failed_with(1, "is damaged")
    assert not (work / "f.png").exists()


@pytest.mark.parametrize("name,value", [("rec_worker", 99), ("click_offsets", 10**12), ("trace_offsets", -5),
                                        ("index", 10**6)], ids=["table ref", "offset huge", "offset negative",
                                                                "index slot"])
def test_values_out_of_range_fail_verify_and_never_index_out_of_bounds(work, cli, name, value):
    store = work / "S.store"
    arr = np.load(store / f"{name}.npy")
    arr[1 if name != "index" else np.flatnonzero(arr >= 0)[0]] = value
    _rewrite_consistently(store, name, arr)
    cli("byproducts", "info", store, "--verify").failed_with(1, "is damaged", name if name != "index" else "index")
    st = ByproductStore.open(store)  # open reads only the ends of each array: a middle value passes
    for call in (lambda: [st.trace(i) for i in range(len(st))], lambda: [st.clicks(i) for i in range(len(st))],
                 lambda: st.rows(list(st.ids)), lambda: st.to("cpu")):
        try:
            call()
        except StoreError as exc:
            assert "is damaged" in str(exc)


def test_coco_shrunk_array_is_damaged(work, cli):
    store = work / "C.store"
    _rewrite_consistently(store, "action_kind", np.load(store / "action_kind.npy")[:-1])
    with pytest.raises(StoreError, match="is damaged.*action_kind"):
        CocoByproductStore.open(store)
    cli("byproducts", "info", store).failed_with(1, "is damaged", "action_kind")


@pytest.mark.parametrize("edit", ["drop array", "path name", "arrays not a dict", "not json"])
def test_a_manifest_edit_is_a_store_error(work, cli, edit):
    mf = work / "S.store" / MANIFEST
    doc = json.loads(mf.read_text())
    if edit == "drop array":
        del doc["arrays"]["trace_t"]
    elif edit == "path name":
        doc["arrays"]["../../secret"] = doc["arrays"].pop("trace_t")
    elif edit == "arrays not a dict":
        doc["arrays"] = [1, 2]
    body = {k: doc[k] for k in ("format", "version", "arrays", "meta")}
    doc["manifest_blake2b"] = _manifest_digest(body)
    mf.write_text("{oops" if edit == "not json" else json.dumps(doc))
    cli("byproducts", "info", work / "S.store", "--verify").failed_with(1, str(work / "S.store"))


# --- show / modes ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["missing folder", "out is a folder", "unknown id", "coco id not int", "no image"])
def test_show_bad_arguments(work, cli, case):
    store, image_id, out, extra = work / "S.store", "n01440764_18", work / "nodir" / "f.png", []
    if case == "out is a folder":
        out = work / "fx"
    elif case == "unknown id":
        image_id, out = "n00000000_0", work / "f.png"
    elif case == "coco id not int":
        store, image_id, out = work / "C.store", "nine", work / "f.png"
    elif case == "no image":
        out, extra = work / "f.png", ["--image", work / "missing.JPEG"]
    frag = {"missing folder": "does not exist", "out is a folder": "is a folder", "unknown id": "IMAGE_ID",
            "coco id not int": "integer", "no image": "--image"}[case]
    before = snapshot(work)
    cli("byproducts", "show", store, image_id, "--out", out, *extra).failed_with(2, frag)
    assert snapshot(work) == before


def test_store_and_figure_get_the_umask_mode(tmp_path, cli):
    fx = write_imagenet_ab_fixture(tmp_path / "fx")
    old = os.umask(0o022)
    try:
        cli("byproducts", "pack", fx["tar"], tmp_path / "S.store", "--quiet").ok()
        cli("byproducts", "show", tmp_path / "S.store", "n01440764_18", "--out", tmp_path / "f.png").ok()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "S.store").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "S.store").iterdir()} == {0o644}
    assert stat.S_IMODE((tmp_path / "f.png").stat().st_mode) == 0o644 and not leftovers(tmp_path)


# --- Python API ---------------------------------------------------------------------------------------------------

def test_api_lookups_and_rows_refuse_wrong_types(work):
    st = ByproductStore.open(work / "S.store")
    with pytest.raises(TypeError, match="list of ids"):
        st.rows("n01440764_18")  # would be looked up letter by letter
    with pytest.raises(KeyError):
        st.row("n00000000_0")
    for bad in (1.0, True, "0"):
        with pytest.raises(TypeError, match="row must be an integer"):
            st.trace(bad)
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        st.boxes(3)
    coco = CocoByproductStore.open(work / "C.store")
    with pytest.raises(TypeError, match="integer COCO image ids"):
        coco.rows(["9"])
    assert coco.rows([9, 12345]).tolist()[1] == -1
    rows, boxes, flips = torch.tensor([0]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([False])
    with pytest.raises(ValueError, match="rows must be an int64"):
        st.point_targets(rows.float(), boxes, flips)
    with pytest.raises(ValueError, match=r"rows must be in \[0, 3\)"):
        st.point_targets(torch.tensor([3]), boxes, flips)
    with pytest.raises(ValueError, match="x0 < x1"):
        st.point_targets(rows, torch.tensor([[0.5, 0.0, 0.5, 1.0]]), flips)


def test_api_write_of_no_samples_writes_nothing(work):
    from luab_fast.byproducts import write_imagenet_store

    before = snapshot(work / "S.store")
    with pytest.raises(ValueError, match="no valid ImageNet-AB files"):
        write_imagenet_store([], work / "S.store")
    with pytest.raises(ValueError, match="no valid ImageNet-AB files"):
        write_imagenet_store(read_imagenet_ab(work / "fx" / "imagenet_ab_fixture.tar.gz", image_ids=["x_1"]),
                             work / "S.store")
    assert snapshot(work / "S.store") == before and not leftovers(work)
