"""Fuzzing the byproduct readers and the store loader (issue 17): whatever comes in, the reader gives valid
samples (that pack) or a problem naming the member / record, and a store either opens with arrays that agree
with each other or raises StoreError naming the store; never IndexError, MemoryError or a crash.

The compiled ImageNet-AB parser runs in this process: tests/test_byproducts_imagenet.py fuzzes it far harder
against the reference parser, and nothing here is meant to reach a crash in it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.coco_ab import fixture_records
from fixtures.imagenet_ab import FIXTURE_FILES, file_elements, serialize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luab_fast._store.format import MANIFEST, _manifest_digest
from luab_fast.byproducts import (
    ByproductStore,
    CocoByproductStore,
    StoreError,
    read_coco_ab,
    read_imagenet_ab,
    write_coco_store,
    write_imagenet_store,
)
from luab_fast.byproducts._pack_coco import pack_coco_arrays
from luab_fast.byproducts._pack_imagenet import pack_imagenet_arrays
from luab_fast.relabel import LabelMapStore, pack_label_maps

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- ImageNet-AB: mutated real-format documents through the reader and the packer -----------------------------

DOCS = [(f"{wnid}/{stem}.xml", serialize(file_elements(stem, wnid, recs, enr), pretty))
        for wnid, stem, recs, enr, pretty in FIXTURE_FILES]
VALUES = st.one_of(st.integers(-2**70, 2**70).map(str), st.text(max_size=12),
                   st.sampled_from(["", " ", "1e999", "-0", "NaN", "True", "enter", "2147483648", "n01440764_18",
                                    "Jörg", "\u00e9", "9" * 30, "-9223372036854775809"]))
TOKENS = [b"<metadata>", b"</metadata>", b"<x>1</x>", b"&amp;", b"\xff", b"\xc3\xa9", b"<", b"</annotation>",
          b"<page_idx>99999999999</page_idx>", b"<filename>other</filename>"]


def _mutate_xml(data, doc: bytes) -> bytes:
    doc = bytearray(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        texts = [m.span(1) for m in re.finditer(rb">([^<]+)<", doc)]
        op = data.draw(st.sampled_from(["value", "value", "insert", "delete"]))
        if op == "value" and texts:
            a, b = data.draw(st.sampled_from(texts))
            doc[a:b] = data.draw(VALUES).encode("utf-8", "surrogatepass")
        elif op == "insert":
            i = data.draw(st.integers(0, len(doc)))
            doc[i:i] = data.draw(st.sampled_from(TOKENS))
        else:
            i = data.draw(st.integers(0, len(doc)))
            del doc[i:i + data.draw(st.integers(1, 16))]
    return bytes(doc)


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_fuzz_imagenet_reader_gives_samples_or_named_problems(data):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "train_xml"
        mutated = set()
        for k, (name, doc) in enumerate(DOCS):
            if data.draw(st.booleans(), label=f"mutate {name}"):
                doc = _mutate_xml(data, doc)
                mutated.add(str(root / name))
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(doc)
        reader = read_imagenet_ab(Path(d), engine=data.draw(st.sampled_from(["auto", "python"])))
        samples = list(reader)  # never raises: every failure is a problem
        assert len(samples) + len(reader.problems) == len(DOCS)
        assert {p.source for p in reader.problems} <= mutated  # a problem names its (mutated) file
        assert len({s.image_id for s in samples}) == len(samples)
        arrays = pack_imagenet_arrays(samples)  # whatever the reader yields packs
        assert len(arrays["ids"]) == len(samples)
        if samples:
            st_ = ByproductStore.open(write_imagenet_store(samples, Path(d) / "s.store"))
            st_.verify()


# --- COCO-AB: mutated records ----------------------------------------------------------------------------------

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=8), st.sampled_from(["\ud800", "add", "person", "Jörg"]))
JSON_VALUE = st.recursive(JSON_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                                         max_size=3), max_leaves=6)


def _paths(v, prefix=()):
    yield prefix
    if isinstance(v, dict):
        for k, c in v.items():
            yield from _paths(c, (*prefix, k))
    elif isinstance(v, list):
        for i, c in enumerate(v):
            yield from _paths(c, (*prefix, i))


def _set(v, path, new, delete: bool):
    for p in path[:-1]:
        v = v[p]
    if delete and isinstance(v, dict):
        del v[path[-1]]
    else:
        v[path[-1]] = new


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_fuzz_coco_reader_gives_samples_or_named_problems(data):
    records = copy.deepcopy(fixture_records())
    mutated = set()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(records) - 1))
        paths = [p for p in _paths(records[i]) if p]
        path = data.draw(st.sampled_from(paths))
        _set(records[i], path, data.draw(JSON_VALUE), data.draw(st.booleans()))
        mutated.add(f"record {i}")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "coco.json"
        path.write_text(json.dumps(records), encoding="utf-8", errors="surrogatepass")
        reader = read_coco_ab(path, duplicates=data.draw(st.sampled_from(["keep", "last"])))
        samples = list(reader)
        assert {p.source for p in reader.problems} <= mutated | {str(path)}
        if reader.duplicates == "keep" and not any(p.source == str(path) for p in reader.problems):
            assert len(samples) + len(reader.problems) == len(records)
        pack_coco_arrays(samples)
        if samples:
            CocoByproductStore.open(write_coco_store(samples, Path(d) / "c.store")).verify()


@settings(max_examples=40, **SETTINGS)
@given(st.data())
def test_fuzz_coco_reader_on_mutated_bytes(data):
    text = bytearray(json.dumps(fixture_records()).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["delete", "insert", "truncate"]))
        if op == "delete":
            del text[i:i + data.draw(st.integers(1, 10))]
        elif op == "insert":
            text[i:i] = data.draw(st.sampled_from([b"{", b"]", b",", b'"', b"\\u", b"\xff", b"1e999", b"null"]))
        else:
            del text[i:]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "coco.json"
        path.write_bytes(bytes(text))
        reader = read_coco_ab(path, chunk_bytes=data.draw(st.sampled_from([7, 64, 1 << 20])))
        samples = list(reader)  # never raises
        assert all(p.source == str(path) or p.source.startswith("record ") for p in reader.problems)
        pack_coco_arrays(samples)


# --- the store loader: random edits of a small packed store --------------------------------------------------

@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from fixtures.coco_ab import write_coco_ab_fixture
    from fixtures.imagenet_ab import write_imagenet_ab_fixture

    root = tmp_path_factory.mktemp("stores")
    fx = write_imagenet_ab_fixture(root / "fx")
    write_imagenet_store(read_imagenet_ab(fx["tar"]), root / "imagenet")
    write_coco_store(read_coco_ab(write_coco_ab_fixture(root / "fx")["path"]), root / "coco")
    for w in ("n01", "n02"):
        (root / "maps" / w).mkdir(parents=True)
        for j in range(2):
            m = torch.stack([torch.rand(2, 3, 3).sort(0, descending=True).values,
                             torch.stack([torch.full((3, 3), 1.0 + j), torch.full((3, 3), 4.0)])])
            torch.save(m, root / "maps" / w / f"{w}_{j}.pt")
    pack_label_maps(root / "maps", root / "relabel", num_classes=10, progress=False)
    return root


def _exercise(kind: str, st_) -> None:
    """Everything a store hands out, over every row."""
    n = len(st_)
    rows = torch.arange(n)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(n, 1)
    flips = torch.zeros(n, dtype=torch.bool)
    if kind == "imagenet":
        for i in range(n):
            st_.trace(i), st_.clicks(i), st_.boxes(i), st_.size(i)
        st_.rows(list(st_.ids))
        st_.point_targets(rows, boxes, flips)
        st_.traces_for(rows)
    elif kind == "coco":
        for i in range(n):
            st_.trace(i)
        st_.rows(st_.ids)
        st_.coco_targets(rows, boxes, flips, torch.ones(n, 80, dtype=torch.bool))
    else:
        st_.rows(list(st_.ids)), st_.wnids, st_.gather(rows), repr(st_)


OPENERS = {"imagenet": ByproductStore.open, "coco": CocoByproductStore.open, "relabel": LabelMapStore.open}
SET_VALUES = [-1, 0, 1, 3, 2**31 - 1, 10**12, -10**12]


def _edit_array(data, path: Path, name: str) -> None:
    """Changes one array and rewrites the manifest to match (an edit that knows the format)."""
    arr = np.load(path / f"{name}.npy")
    op = data.draw(st.sampled_from(["shrink", "grow", "set", "astype", "flatten"]), label="array op")
    if op == "shrink" and len(arr):
        arr = arr[:-1]
    elif op == "grow" and len(arr):
        arr = np.concatenate([arr, arr[-1:]])
    elif op == "set" and arr.size and arr.dtype.kind in "iuf":
        info = np.finfo(arr.dtype) if arr.dtype.kind == "f" else np.iinfo(arr.dtype)
        fits = [v for v in SET_VALUES if info.min <= v <= info.max]
        flat = arr.reshape(-1).copy()
        flat[data.draw(st.integers(0, flat.size - 1))] = data.draw(st.sampled_from(fits))
        arr = flat.reshape(arr.shape)
    elif op == "astype" and arr.dtype.kind in "iufb":
        with np.errstate(over="ignore", invalid="ignore"):
            arr = arr.astype(data.draw(st.sampled_from([np.int32, np.int64, np.float64, np.float16])))
    elif op == "astype":  # bytes: another width
        arr = arr.astype("S64")
    elif op == "flatten":
        arr = arr.reshape(-1)
    np.save(path / f"{name}.npy", arr, allow_pickle=False)
    doc = json.loads((path / MANIFEST).read_text())
    digest = hashlib.blake2b((path / f"{name}.npy").read_bytes(), digest_size=16).hexdigest()
    doc["arrays"][name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "blake2b": digest}
    _write_manifest(path, doc, True)


def _write_manifest(path: Path, doc: dict, reseal: bool) -> None:
    if reseal:
        doc["manifest_blake2b"] = _manifest_digest({k: doc[k] for k in ("format", "version", "arrays", "meta")})
    (path / MANIFEST).write_text(json.dumps(doc))


def _edit_manifest(data, path: Path) -> None:
    doc = json.loads((path / MANIFEST).read_text())
    name = data.draw(st.sampled_from(sorted(doc["arrays"])), label="manifest array")
    op = data.draw(st.sampled_from(["shape", "dtype", "drop", "meta", "version", "rename"]), label="manifest op")
    if op == "shape":
        doc["arrays"][name]["shape"] = [data.draw(st.integers(0, 10**6))] + doc["arrays"][name]["shape"][1:]
    elif op == "dtype":
        doc["arrays"][name]["dtype"] = data.draw(st.sampled_from(["<f8", "|O", "<i4", "nonsense"]))
    elif op == "drop":
        del doc["arrays"][name]
    elif op == "meta":
        key = data.draw(st.sampled_from(["kind", "topk", "size", "num_classes"]))
        doc["meta"][key] = data.draw(st.sampled_from([None, "coco", "imagenet", 0, 5, -1, "x", [1]]))
    elif op == "version":
        doc["version"] = data.draw(st.sampled_from([0, 2, "1", None]))
    else:
        doc["arrays"][data.draw(st.sampled_from(["../x", "a/b", "ok_name"]))] = doc["arrays"].pop(name)
    _write_manifest(path, doc, data.draw(st.booleans(), label="reseal"))


def _edit_bytes(data, path: Path, name: str) -> None:
    f = path / f"{name}.npy"
    raw = bytearray(f.read_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    if data.draw(st.booleans(), label="truncate"):
        del raw[i:]
    else:
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    f.write_bytes(bytes(raw))


@pytest.mark.parametrize("kind", list(OPENERS))
@settings(max_examples=50, **SETTINGS)
@given(data=st.data())
def test_fuzz_store_loader_opens_consistent_arrays_or_names_the_store(stores, kind, data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{kind}.store"
        shutil.copytree(stores / kind, path)
        names = sorted(p.stem for p in path.glob("*.npy"))
        for _ in range(data.draw(st.integers(1, 2), label="edits")):
            if data.draw(st.booleans(), label="array, not manifest"):
                _edit_array(data, path, data.draw(st.sampled_from(names), label="array"))
            else:
                _edit_manifest(data, path)
        if data.draw(st.booleans(), label="then flip or cut bytes"):  # last: the edits above read the arrays
            _edit_bytes(data, path, data.draw(st.sampled_from(names), label="array"))
        try:
            st_ = OPENERS[kind](path)
        except StoreError as exc:
            assert str(path) in str(exc)
            return
        try:
            st_.verify()
        except StoreError as exc:
            assert str(path) in str(exc)
            try:  # open passed, verify did not: what it hands out is right or a StoreError, nothing else
                _exercise(kind, st_)
            except StoreError as exc2:
                assert "is damaged" in str(exc2)
            return
        _exercise(kind, st_)  # verified: the arrays agree with each other, so nothing may fail
