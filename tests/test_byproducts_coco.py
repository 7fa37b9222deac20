"""COCO-AB reader: the fixture field by field, duplicate policies against the official loader's dict,
streaming memory, chunk-boundary independence, every bad-input case, and a hypothesis fuzz."""

from __future__ import annotations

import copy
import json
import math
import re
import tracemalloc
from dataclasses import fields

import numpy as np
import pytest
from fixtures.coco_ab import expected_sample, fixture_records, write_coco_ab_fixture, write_many
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luab_fast.byproducts.coco_ab import read_coco_ab
from luab_fast.byproducts.records import CocoSample, ReadProblem

DTYPES = {"category_index": np.int16, "category_time": np.int64, "category_keyboard": np.bool_,
          "trace_xy": np.float32, "trace_t": np.int64}


def assert_same(got: CocoSample, want: CocoSample) -> None:
    for f in fields(CocoSample):
        g, w = getattr(got, f.name), getattr(want, f.name)
        if f.name in DTYPES:
            assert g.dtype == DTYPES[f.name] and g.shape == w.shape, (f.name, g.dtype, g.shape, w.shape)
            np.testing.assert_array_equal(g, w, err_msg=f.name)
        else:
            assert g == w, (f.name, g, w)


def test_fixture_field_by_field(tmp_path):
    fx = write_coco_ab_fixture(tmp_path)
    reader = read_coco_ab(fx["path"])
    got = list(reader)
    assert reader.problems == [] and reader.records_seen == 3 and len(got) == 3
    for g, w in zip(got, fx["keep"]):
        assert_same(g, w)
    s9, s25, _ = got
    assert (s9.image_id, s9.original_width, s9.original_height, s9.time_spent) == (9, 640, 480, 22283)
    assert [(a.action, a.icon) for a in s9.actions] == [("add", "person"), ("add", "cake"), ("move", "cake"),
                                                        ("remove", "cup")]
    assert s9.actions[0].point_from is None and s9.actions[0].point_to == (0.23, 0.56)
    assert s9.actions[2].point_from == s9.actions[1].point_to and s9.actions[3].point_to is None
    assert s9.category_index.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 7, 8, 9, 10]
    assert s9.category_keyboard.sum() == 1 and s9.category_name[0] == "Animal"
    assert (np.diff(s9.category_time) > 0).all() and s9.trace_t.tolist() == [1203, 1211, 1250]
    assert s25.actions[0].point_from is None  # the key is absent in the file
    assert s25.trace_xy.shape == (0, 2) and s25.trace_t.shape == (0,)


def test_duplicates_policies_match_official_dict(tmp_path, capsys):
    fx = write_coco_ab_fixture(tmp_path)
    assert [s.worker_id for s in read_coco_ab(fx["path"])] == ["47DBDD543E", "9F1A2B3C4D", "0C5E77A1B2"]
    reader = read_coco_ab(fx["path"], duplicates="last", progress=True)
    for g, w in zip(list(reader), fx["last"], strict=True):
        assert_same(g, w)
    assert reader.duplicates_dropped == 1 and "coco_ab_fixture.json" in capsys.readouterr().err  # the bar
    big = write_many(tmp_path / "many.json", 300, seed=3)
    official = {r["image_id"]: r for r in json.loads(big.read_text())}  # the notebook's loader
    got = list(read_coco_ab(big, duplicates="last", chunk_bytes=5000))
    assert [s.image_id for s in got] == list(official) and len(got) < 300
    for s in got:
        assert_same(s, expected_sample(official[s.image_id]))
    with pytest.raises(ValueError, match="duplicates must be 'keep' or 'last', got 'first'"):
        read_coco_ab(big, duplicates="first")
    with pytest.raises(FileNotFoundError):
        read_coco_ab(tmp_path / "nope.json")


def test_streaming_memory_is_bounded(tmp_path):
    path = write_many(tmp_path / "many.json", 200, seed=1)  # ~3.7 MB
    size = path.stat().st_size
    list(read_coco_ab(path, chunk_bytes=1 << 16))  # warm up imports and caches
    for mode in ("keep", "last"):
        reader = read_coco_ab(path, duplicates=mode, chunk_bytes=1 << 16)
        tracemalloc.start()
        n = sum(1 for _ in reader)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert n > 190 and peak < size / 5, f"{mode}: peak {peak} B for a {size} B file"


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunk_boundaries_bom_and_non_ascii(tmp_path, chunk):
    recs = fixture_records()
    recs[0]["worker_id"], recs[2]["hit_id"] = "Ünïcødé→🐍", "ẞ" * 40
    path = tmp_path / "u.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(recs, ensure_ascii=False).encode())
    for mode, want in (("keep", recs), ("last", [recs[2], recs[1]])):
        reader = read_coco_ab(path, duplicates=mode, chunk_bytes=chunk)
        got = list(reader)
        assert reader.problems == [] and len(got) == len(want)
        for g, r in zip(got, want):
            assert_same(g, expected_sample(r))


def _put(rec: dict, where: str, value) -> None:
    """Set (or, with DROP, delete) the value at a dotted path; an edit whose path no longer exists is skipped."""
    *keys, last = where.split(".")
    try:
        for k in keys:
            rec = rec[int(k)] if isinstance(rec, list) else rec[k]
        k = int(last) if isinstance(rec, list) else last
        if value is DROP:
            del rec[k]
        else:
            rec[k] = value
    except (KeyError, IndexError, TypeError, ValueError):
        pass


DROP = object()
RECORD_CASES = [  # (field path in record 1, value, field named in the problem)
    ("worker_id", 123, "worker_id"), ("image_id", DROP, "image_id"), ("image_id", "25", "image_id"),
    ("image_id", None, "image_id"), ("imageWidth", -1, "imageWidth"),
    ("originalImageHeight", 2.5, "originalImageHeight"),
    ("timeSpent", True, "timeSpent"), ("page_id", -3, "page_id"), ("mouseTracking", {}, "mouseTracking"),
    ("actionHistories.0.pointTo.x", math.nan, "actionHistories[0].pointTo.x"),
    ("actionHistories.0.pointTo.y", math.inf, "actionHistories[0].pointTo.y"),
    ("actionHistories.0.pointTo.x", 10.5, "actionHistories[0].pointTo.x"),
    ("actionHistories.0.pointTo", [0.1, 0.2], "actionHistories[0].pointTo"),
    ("actionHistories.0.actionType", "delete", "actionHistories[0].actionType"),
    ("actionHistories.0.iconType", None, "actionHistories[0].iconType"),
    ("actionHistories.0.timeAt", 1e30, "actionHistories[0].timeAt"),
    ("categoryHistories.3.categoryIndex", 11, "categoryHistories[3].categoryIndex"),
    ("categoryHistories.3.usingKeyboard", "yes", "categoryHistories[3].usingKeyboard"),
    ("categoryHistories.3.timeAt", 2**63, "categoryHistories[3].timeAt"),
]


@pytest.mark.parametrize("where,value,field", RECORD_CASES)
def test_bad_record_reported_and_skipped(tmp_path, where, value, field):
    recs = fixture_records()
    _put(recs[1], where, value)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(recs))
    reader = read_coco_ab(path)
    assert [s.worker_id for s in reader] == ["47DBDD543E", "0C5E77A1B2"]
    assert len(reader.problems) == 1 and reader.problems[0].source == "record 1"
    assert repr(field) in reader.problems[0].reason
    with pytest.raises(ValueError, match=re.escape(f"record 1: field {field!r}")):
        list(read_coco_ab(path, strict=True))


@pytest.mark.parametrize("x,reason", [(float("nan"), "finite"), (None, "null"), (True, "boolean"), (-10.01, "finite")])
def test_bad_trace_point_named(tmp_path, x, reason):
    recs = fixture_records()
    recs[0]["mouseTracking"][2]["x"] = x
    (tmp_path / "t.json").write_text(json.dumps(recs))
    reader = read_coco_ab(tmp_path / "t.json")
    assert len(list(reader)) == 2
    assert "'mouseTracking[2].x'" in reader.problems[0].reason and reason in reader.problems[0].reason


def _file_cases() -> list[tuple[str, bytes, int, str, str]]:
    parts = [json.dumps(r) for r in fixture_records()]
    text = "[" + ", ".join(parts) + "]"  # == json.dumps of the list
    cut = text.index(parts[2]) + 20  # inside record 2
    return [  # (name, bytes, samples before the stop, problem source, reason substring)
        ("object", b'{"image_id": 9}', 0, "PATH", "must be a JSON array, got an object"),
        ("empty", b"  \n", 0, "PATH", "empty or blank"),
        ("cut_in_record", text[:cut].encode(), 2, "record 2", "truncated: file ends inside the record"),
        ("no_close", text[:-1].encode(), 3, "PATH", "before the closing ']'"),
        ("cut_after_comma", text[:cut - 20].encode(), 2, "record 2", "before the closing"),
        ("bad_syntax", text.replace('"image_id": 25', '"image_id" 25').encode(), 1, "record 1", "invalid JSON"),
        ("no_comma", f"[{parts[0]} {parts[1]}]".encode(), 1, "record 1", "expected ',' or ']'"),
        ("trailing", text.encode() + b" []", 3, "PATH", "trailing data"),
        ("utf8", text.replace("47DBDD543E", "47DBDD\udc80").encode("utf-8", "surrogateescape"), 0, "PATH", "UTF-8"),
    ]


@pytest.mark.parametrize("name,data,n_ok,source,reason", _file_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_bad_file_reported(tmp_path, name, data, n_ok, source, reason):
    path = tmp_path / f"{name}.json"
    path.write_bytes(data)
    source = str(path) if source == "PATH" else source
    for chunk in (3, 1 << 20):
        reader = read_coco_ab(path, chunk_bytes=chunk)
        assert len(list(reader)) == n_ok
        assert [(p.source, reason in p.reason) for p in reader.problems] == [(source, True)], reader.problems
    with pytest.raises(ValueError, match=f"{re.escape(source)}: .*{re.escape(reason)}"):
        list(read_coco_ab(path, strict=True))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from("xy") | st.text(max_size=3), c,
                                                                        max_size=3), max_leaves=8)
PATHS = ["image_id", "worker_id", "page_id", "imageWidth", "timeSpent", "actionHistories", "actionHistories.0",
         "actionHistories.0.pointFrom", "actionHistories.3.pointTo.y", "actionHistories.1.timeAt", "categoryHistories",
         "categoryHistories.0.categoryIndex", "categoryHistories.5.usingKeyboard", "mouseTracking", "mouseTracking.1",
         "mouseTracking.2.timeAt", "mouseTracking.0.x"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), JSON), max_size=3), cut=st.none() | st.floats(0, 1),
       chunk=st.sampled_from([5, 64, 1 << 20]))
def test_fuzz_never_raises_unexpectedly(tmp_path, edits, cut, chunk):
    recs = fixture_records()
    for where, value in edits:
        _put(recs[0], where, copy.deepcopy(value))
    data = json.dumps(recs).encode()
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / "fuzz.json"
    path.write_bytes(data)
    reader = read_coco_ab(path, chunk_bytes=chunk)
    got = list(reader)
    per_record = [p for p in reader.problems
                  if p.source.startswith("record ") and int(p.source[7:]) < reader.records_seen]
    assert len(got) + len(per_record) == reader.records_seen <= 3
    assert all(isinstance(p, ReadProblem) and p.reason for p in reader.problems)
    try:
        strict = list(read_coco_ab(path, strict=True, chunk_bytes=chunk))
    except ValueError:
        assert reader.problems
    else:
        assert not reader.problems and len(strict) == len(got)
