"""ImageNet-AB reader: the fixture of shared/docs/byproducts.md read from the tar and from both directory
layouts, field by field; junk, missing ids, problems (strict and not); the tar walker against tarfile;
the compiled parser against the reference on a corpus and on fuzzed bytes."""

from __future__ import annotations

import io
import re
import tarfile
import threading
from dataclasses import fields

import numpy as np
import pytest
from fixtures.imagenet_ab import MISSING_ID, write_imagenet_ab_fixture, write_many
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luab_fast import HAS_EXT
from luab_fast.byproducts._imagenet_xml import assemble
from luab_fast.byproducts._tar_stream import iter_decompressed, iter_members
from luab_fast.byproducts.imagenet_ab import ImageNetABReader, parse_xml_reference, read_imagenet_ab

ENGINES = ["python", pytest.param("cpp", marks=pytest.mark.skipif(not HAS_EXT, reason="no compiled core"))]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_imagenet_ab_fixture(tmp_path_factory.mktemp("imagenet_ab"))


def assert_same(got, exp, where: str = "") -> None:
    """Field-by-field equality of samples / records: dtype, shape and values of arrays, types of scalars."""
    assert type(got) is type(exp), f"{where}: {type(got).__name__} != {type(exp).__name__}"
    for f in fields(exp):
        a, b, w = getattr(got, f.name), getattr(exp, f.name), f"{where}.{f.name}"
        if f.name == "records":
            assert len(a) == len(b), f"{w}: {len(a)} records, expected {len(b)}"
            for k, (ra, rb) in enumerate(zip(a, b)):
                assert_same(ra, rb, f"{w}[{k}]")
        elif isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, \
                f"{w}: {getattr(a, 'dtype', type(a))}{getattr(a, 'shape', '')} != {b.dtype}{b.shape}"
            bad = np.flatnonzero(a.ravel() != b.ravel())
            assert bad.size == 0, f"{w}: first mismatch at {bad[0]}: {a.ravel()[bad[0]]} != {b.ravel()[bad[0]]}"
        else:
            assert type(a) is type(b) and a == b, f"{w}: {a!r} != {b!r}"


def read(src, engine: str, **kw):
    return list(r := read_imagenet_ab(src, engine=engine, **kw)), r


SOURCES = ["tar", "release", "release/train_xml", "ILSVRC", "ILSVRC/Annotations/CLS-LOC/train_enriched"]


def source(fx, which: str):
    top, _, rest = which.partition("/")
    return fx["tar"] if top == "tar" else (fx["train_xml_root"] if top == "release" else fx["enriched_root"]) / rest


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("which", SOURCES)
def test_fixture_field_by_field(fx, which, engine):
    samples, r = read(source(fx, which), engine)
    assert [s.image_id for s in samples] == list(fx["expected"])
    for s in samples:
        assert_same(s, fx["expected"][s.image_id], s.image_id)
    assert r.problems == [] and r.n_files == 3 and r.n_skipped == 1 and r.engine == engine  # 1: ._ junk


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("which", ["tar", "release", "ILSVRC"])
def test_image_ids_and_missing(fx, which, engine):
    ids = fx["image_list"].read_text().split()
    samples, r = read(source(fx, which), engine, image_ids=ids)
    assert sorted(s.image_id for s in samples) == sorted(ids[:3]) and r.missing == [MISSING_ID]
    forms = ["n01440764/n01440764_18", "train/n01443537/n01443537_2.JPEG", "x/n01443537_16.xml"]
    samples, r = read(source(fx, which), engine, image_ids=forms)
    assert [s.image_id for s in samples] == ["n01440764_18", "n01443537_2"] and r.missing == [MISSING_ID]


def test_selected_targets_and_edges(fx):
    got = {s.image_id: s for s in read_imagenet_ab(fx["tar"])}
    assert [r.selected for r in got["n01440764_18"].records] == [True, True]
    assert got["n01443537_2"].records[0].selected is False and len(got["n01443537_2"].records[0].trace_t) == 0
    # official target: mean over selected records of each record's first click; it lies inside the box
    first = np.array([r.click_xy[0] for r in got["n01440764_18"].records if r.selected and len(r.click_t)])
    np.testing.assert_allclose(first.mean(0), [0.375, 0.4], rtol=1e-6)
    rec = got["n01440764_18"].records[0]
    assert rec.trace_xy[1, 0] == np.float32(1.003)  # out of range, kept as released (masking is downstream)
    two = got["n01440764_18"]
    assert two.records[1].selected_count == 2 and two.boxes.tolist() == [[100, 50, 400, 300]]


def _doc(meta: str = "", head: str = "<filename>n0_1</filename><folder>n0</folder>") -> bytes:
    return f"<annotation>{head}<metadata>{meta}</metadata></annotation>".encode()


BAD = {  # member -> (bytes, substring of the reason)
    "malformed": (b"<annotation><filename>n0_1</filename><metadata>", "malformed XML"),
    "not_number": (_doc("<mouseTracking><x>abc</x><y>0.1</y><time>5</time></mouseTracking>"), "not a finite number"),
    "nan": (_doc("<selectedRecord><x>NaN</x><y>0.1</y><time>5</time></selectedRecord>"), "not a finite number"),
    "inf": (_doc("<mouseTracking><x>0.2</x><y>inf</y><time>5</time></mouseTracking>"), "not a finite number"),
    "f32_overflow": (_doc("<mouseTracking><x>1e39</x><y>0</y><time>5</time></mouseTracking>"), "not finite as float32"),
    "negative_size": (_doc("<imageWidth>-243</imageWidth>"), "negative"),
    "no_filename": (_doc(head="<folder>n0</folder>"), "missing <filename>"),
    "wrong_filename": (_doc(head="<filename>n0_2</filename>"), "does not match"),
    "root": (b"<annotations><filename>n0_1</filename></annotations>", "expected <annotation>"),
    "no_x": (_doc("<mouseTracking><y>0.1</y><time>5</time></mouseTracking>"), "has no <x>"),
    "action": (_doc("<hoveredRecord><action>hover</action><time>5</time></hoveredRecord>"), "'enter' nor 'leave'"),
    "selected": (_doc("<selected>true</selected>"), "neither 'True' nor 'False'"),
    "int64": (_doc("<selectedRecord><x>0</x><y>0</y><time>99999999999999999999</time></selectedRecord>"), "int64"),
    "no_bndbox": (b"<annotation><filename>n0_1</filename><object><name>n0</name></object></annotation>", "bndbox"),
}


def _tar(path, members: dict[str, bytes], fmt=tarfile.GNU_FORMAT):
    with tarfile.open(path, "w:gz", format=fmt) as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_bad_files_are_problems(tmp_path, engine):
    good = {"train_xml/n0/n0_1.xml": _doc("<selected>True</selected>"), "train_xml/README.txt": b"x"}
    bad = {f"train_xml/{k}/n0_1.xml": v for k, (v, _) in BAD.items()}
    src = _tar(tmp_path / "bad.tar.gz", {**good, **bad})
    samples, r = read(src, engine)
    assert [s.image_id for s in samples] == ["n0_1"] and samples[0].records[0].selected is True
    assert r.n_skipped == 1 and [p.source for p in r.problems] == list(bad)
    for p, (_, why) in zip(r.problems, BAD.values()):
        assert why in p.reason, (p.source, p.reason)
    with pytest.raises(ValueError, match="train_xml/malformed/n0_1.xml: malformed XML"):
        read(src, engine, strict=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_truncated_and_corrupt_archives(tmp_path, engine):
    many = write_many(tmp_path, 60, seed=1)
    data = many["tar"].read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    samples, r = read(tmp_path / "cut.tar.gz", engine)
    assert 0 < len(samples) < 60 and [s.image_id for s in samples] == many["ids"][: len(samples)]
    assert len(r.problems) == 1 and re.search("truncated.*stopped after member", r.problems[0].reason)
    with pytest.raises(ValueError, match="cut.tar.gz: .*truncated"):
        read(tmp_path / "cut.tar.gz", engine, strict=True)
    (tmp_path / "flip.tar.gz").write_bytes(data[:200] + bytes(b ^ 0x55 for b in data[200:400]) + data[400:])
    _, r = read(tmp_path / "flip.tar.gz", engine)
    assert len(r.problems) == 1 and "corrupt gzip data" in r.problems[0].reason


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_walker_matches_tarfile(tmp_path, fmt, mode):
    long_dir = "train_xml/" + "d" * 120 if fmt != tarfile.USTAR_FORMAT else "train_xml/" + "d" * 90
    names = {"train_xml/n0/a.xml": b"<a/>", f"{long_dir}/b.xml": b"x" * 700, "train_xml/n1/._c.xml": b"\0" * 3,
             "train_xml/n1/d.xml": b""}
    if fmt == tarfile.PAX_FORMAT:
        names["train_xml/n2/\u00e9t\u00e9.xml"] = b"<e/>"
    path = tmp_path / "t.tar"
    with tarfile.open(path, mode, format=fmt) as tf:
        tf.addfile(tarfile.TarInfo("train_xml/"), None)  # a regular-file entry whose name ends in "/"
        for name, data in names.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    with tarfile.open(path, "r|*") as tf:
        want = [(ti.name, tf.extractfile(ti).read()) for ti in tf if ti.isfile()]
    got = list(iter_members((d for d, _ in iter_decompressed(path)), lambda n: True))
    assert got == want


def test_reader_arguments(fx, tmp_path):
    with pytest.raises(ValueError, match="engine"):
        ImageNetABReader(fx["tar"], engine="java")
    with pytest.raises(FileNotFoundError):
        ImageNetABReader(tmp_path / "nope.tar.gz")
    (tmp_path / "x.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match="must be a directory or one of"):
        list(ImageNetABReader(tmp_path / "x.zip"))
    assert len(list(read_imagenet_ab(fx["tar"], progress=True))) == 3
    (tmp_path / "empty").mkdir()
    _, r = read(tmp_path / "empty", "python")
    assert len(r.problems) == 1 and "no ImageNet-AB XML files" in r.problems[0].reason
    before = threading.active_count()
    with read_imagenet_ab(write_many(tmp_path, 40, seed=3)["tar"]) as r:  # abandoned early: threads stop
        next(r)
    assert threading.active_count() == before


# --- the compiled parser against the reference ----------------------------------------------------

needs_ext = pytest.mark.skipif(not HAS_EXT, reason="no compiled core")


def check_against_reference(data: bytes, name: str = "train_xml/n0/n0_1.xml"):
    """Either parser may refuse; what the compiled one accepts, the reference returns identically."""
    from luab_fast._ext import _C

    try:
        ref = parse_xml_reference(data, name)
    except ValueError as e:
        ref = e
    got = assemble(_C.byproducts.parse_imagenet_xml([data]), [name])[0]
    if got is None:  # refused: the reader falls back to the reference
        return ref
    if isinstance(got, ValueError):
        assert isinstance(ref, ValueError) and str(got) == str(ref)
    else:
        assert not isinstance(ref, ValueError), f"compiled parser accepted what the reference refuses: {ref}"
        assert_same(got, ref, name)
    return ref


@needs_ext
def test_compiled_equals_reference_on_corpus(fx, tmp_path):
    many = write_many(tmp_path, 300, seed=7)
    with tarfile.open(many["tar"]) as tf:
        docs = [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()]
    docs += [(m, fx["xml"][m.rsplit("/", 1)[1][:-4]]) for m in fx["members"]]
    for name, data in docs:
        assert not isinstance(check_against_reference(data, name), ValueError)
    edge = "<mouseTracking><x>{}</x><y>-1e-46</y><time>-9223372036854775808</time></mouseTracking>"
    fmax = check_against_reference(_doc(edge.format("3.4028235677973362e38")))  # rounds down to FLT_MAX
    assert fmax.records[0].trace_xy[0, 0] == np.finfo(np.float32).max and fmax.records[0].trace_t[0] == -2**63
    assert "float32" in str(check_against_reference(_doc(edge.format("-3.4028235677973366e38"))))  # rounds to -inf
    py, cpp = (list(ImageNetABReader(many["tar"], engine=e, batch_size=7, n_threads=2)) for e in ("python", "cpp"))
    for a, b in zip(cpp, py, strict=True):
        assert_same(a, b, a.image_id)


TOKENS = [b"<", b">", b"</", b"/>", b"&amp;", b"&#49;", b"<!--c-->", b"<![CDATA[1]]>", b"\x00", b"\xc3\xa9", b"\xff",
          b"NaN", b"-", b".", b"e", b"1e999", b"7", b"<x>0.5</x>", b"<time>1</time>", b" a='1'", b' a="1" a="2"',
          b'"', b"\r\n", b"\r", b"True", b"False", b"<?xml version='1.0'?>", b" ", b"<metadata>", b"</metadata>",
          b"xmlns='u'", b"<b:c/>", b"]]>", b"\t"]
SEEDS = [_doc("<selected>True</selected><mouseTracking><x>0.25</x><y>1.003</y><time>7</time></mouseTracking>"
              "<hoveredRecord><action>enter</action><time>3</time></hoveredRecord><imagePosition><x>1</x><y>2</y>"
              "</imagePosition><worker_id>AB</worker_id><page_idx>3</page_idx>"),
         b'<?xml version="1.0" encoding="utf-8"?>\n<annotation>\n\t<filename>n0_1</filename>\n\t<size><width>5</width>'
         b"</size><object><name>n0</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4.5</ymax></bndbox>"
         b"</object><metadata><selectedRecord><time>9</time><x>.5</x><y>5.</y></selectedRecord></metadata>\n"
         b"</annotation>\n"]


@needs_ext
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_xml(data):
    doc = bytearray(data.draw(st.sampled_from(SEEDS)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(doc)))
        op = data.draw(st.sampled_from(["insert", "delete", "replace", "value", "value"]))
        texts = [m.span(1) for m in re.finditer(rb">([^<]+)<", doc)]
        if op == "value" and texts:  # rewrite one element's text: numbers, signs, spaces, exponents
            a, b = data.draw(st.sampled_from(texts))
            doc[a:b] = data.draw(st.text(alphabet="0123456789.-+eE xTrueFalsN\t", max_size=12)).encode()
        elif op == "insert":
            doc[i:i] = data.draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del doc[i:i + data.draw(st.integers(1, 8))]
        else:
            doc[i:i + 1] = data.draw(st.binary(min_size=1, max_size=1))
    check_against_reference(bytes(doc))


@needs_ext
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(alphabet="<>/ax=\"'1.-e& \n", max_size=60).map(str.encode))
def test_fuzz_random_bytes(blob):
    check_against_reference(blob)
    check_against_reference(b"<annotation><filename>n0_1</filename>" + blob + b"</annotation>")
