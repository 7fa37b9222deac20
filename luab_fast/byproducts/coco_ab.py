"""COCO-AB reader: ``coco_ab_v1_0.json`` (one JSON array of per-image records, 398 MB) → CocoSample.

Format: ../shared/docs/byproducts.md §1b. The file is streamed: read in ``chunk_bytes`` pieces, decoded
one array element at a time with ``json.JSONDecoder.raw_decode``, so memory stays O(one chunk + one
record) (≈ 3 × chunk: 12 MiB at the default 4 MiB) instead of the ~5 × file size (≈ 2 GB for the real
file) that ``json.load`` of the whole document costs. Speed is on par with ``json.load``.

API::

    reader = read_coco_ab(path, duplicates="keep", strict=False, progress=False)
    for sample in reader:          # CocoSample, one per usable record; each iteration re-reads the file
        ...
    reader.problems                # list[ReadProblem] of the last iteration, source "record <i>" or the path
    reader.records_seen            # array elements met (usable or not)
    reader.duplicates_dropped      # records superseded by a later one with the same image_id ("last")

Rules (missing keys and ``null`` are the same thing everywhere):
- ``image_id`` required, integer ≥ 0. Strings ``worker_id``/``hit_id`` default "". ``page_id`` ≥ 0,
  default −1. Sizes (``imageWidth`` … ``originalImageHeight``) integers in [0, 2**31 − 1], default 0.
  ``timeSpent`` integer ≥ 0, default 0. Unknown keys are ignored.
- Times (``timeAt``) are required integers in int64 range (an integral float like 13463.0 is accepted);
  ms since page start, no sign check.
- Coordinates (``x``, ``y`` of ``pointFrom``/``pointTo``/``mouseTracking``) are required finite numbers
  with ``|v| <= COORD_BOUND`` (10.0: real values slightly exceed [0, 1]; the tool divides by the displayed
  size, and writes null for the NaN/Infinity a 0-px size gives — such records are reported, not yielded).
- ``pointFrom``/``pointTo`` null/absent → None. ``actionType`` ∈ {add, move, remove}; ``iconType`` a
  required string (kept as released, not checked against the 80 names). ``categoryIndex`` in [0, 10];
  ``categoryName`` a string (default ""); ``usingKeyboard`` a bool (default False).
- A record that breaks a rule is not yielded: ``ReadProblem("record <i>", "field 'actionHistories[2].
  pointTo.x': …")``. ``strict=True`` raises ValueError at the first problem instead.
- Whole-file problems (top level not an array, invalid UTF-8, invalid JSON syntax, truncation, trailing
  data) end the read with one ReadProblem; records before it are still yielded.

Duplicates: ``"keep"`` yields every usable record in file order (O(chunk + record) memory).
``"last"`` gives exactly the official loader's ``{r["image_id"]: r for r in records}``: one sample per
image_id, from its last usable record, in order of each id's first appearance. It scans the file once
(validating and keeping ``image_id → (record index, byte start, byte end)``, ~150 B per distinct id,
≈ 12 MB for the real 82.7k ids), then re-reads each winner's byte range: about twice the time of "keep".
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .._cli import DataError
from .records import CocoAction, CocoSample, ReadProblem

CHUNK_BYTES = 4 << 20  # bytes read per file read
MAX_RECORD_CHARS = 16 << 20  # a record larger than this ends the read, reported (real records are ~5 KB)
COORD_BOUND = 10.0  # |x|, |y| above this is garbage (released values sit in ~[0, 1])
SIZE_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ACTION_TYPES = ("add", "move", "remove")
CATEGORY_NAMES = ("PersonAccessory", "Animal", "Vehicle", "OutdoorObj", "Sports", "Kitchenware", "Food",
                  "Furniture", "Appliance", "Electronics", "IndoorObjects")  # categoryIndex 0..10, tool order

_WS = re.compile(r"[ \t\n\r]*")
_NUM = {float, int}
_JSON_TYPE = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
              list: "array", dict: "object"}


class _Bad(Exception):
    """A record-level rule broken at ``field``."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"field {field!r}: {msg}")
        self.field = field


def _desc(v: object) -> str:
    r = repr(v)
    return f"{_JSON_TYPE.get(type(v), type(v).__name__)} {r if len(r) <= 40 else r[:37] + '...'}"


def _int(v: object, field: str, lo: int, hi: int, default: int | None = None) -> int:
    if v is None:
        if default is None:
            raise _Bad(field, "missing (absent or null)")
        return default
    if type(v) is float and v.is_integer():  # 13463.0; NaN/inf are not integral
        v = int(v)
    if type(v) is not int:
        raise _Bad(field, f"expected an integer, got {_desc(v)}")
    if not lo <= v <= hi:
        raise _Bad(field, f"must be in [{lo}, {hi}], got {v}")
    return v


def _time(v: object, field: str) -> int:
    return _int(v, field, INT64_MIN, INT64_MAX)


def _str(v: object, field: str, required: bool = False) -> str:
    if v is None and not required:
        return ""
    if type(v) is not str:
        raise _Bad(field, f"expected a string, got {_desc(v)}" if v is not None else "missing (absent or null)")
    if not v.isascii():  # stores keep strings as UTF-8 bytes: a lone surrogate ("\\ud800") has none
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(field, f"not valid Unicode (a lone surrogate escape): {_desc(v)}") from None
    return v


def _coord(v: object, field: str) -> float:
    if type(v) in _NUM and -COORD_BOUND <= v <= COORD_BOUND:  # NaN fails the comparison
        return float(v)
    if v is None:
        raise _Bad(field, "missing (absent or null; the tool writes null for NaN/Infinity, e.g. a 0-px image)")
    if type(v) in _NUM:
        raise _Bad(field, f"must be finite with |v| <= {COORD_BOUND}, got {v!r}")
    raise _Bad(field, f"expected a number, got {_desc(v)}")


def _obj(v: object, field: str) -> dict:
    if type(v) is not dict:
        raise _Bad(field, f"expected an object, got {_desc(v)}")
    return v


def _list(v: object, field: str) -> list:
    if v is None:
        return []
    if type(v) is not list:
        raise _Bad(field, f"expected an array, got {_desc(v)}")
    return v


def _point(v: object, field: str) -> tuple[float, float] | None:
    if v is None:
        return None
    v = _obj(v, field)
    return _coord(v.get("x"), f"{field}.x"), _coord(v.get("y"), f"{field}.y")


def _actions(raw: object) -> list[CocoAction]:
    out = []
    for i, a in enumerate(_list(raw, "actionHistories")):
        f = f"actionHistories[{i}]"
        a = _obj(a, f)
        kind = _str(a.get("actionType"), f"{f}.actionType", required=True)
        if kind not in ACTION_TYPES:
            raise _Bad(f"{f}.actionType", f"expected one of {ACTION_TYPES}, got {kind!r}")
        out.append(CocoAction(kind, _str(a.get("iconType"), f"{f}.iconType", required=True),
                              _point(a.get("pointFrom"), f"{f}.pointFrom"), _point(a.get("pointTo"), f"{f}.pointTo"),
                              _time(a.get("timeAt"), f"{f}.timeAt")))
    return out


def _categories(raw: object) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    items = _list(raw, "categoryHistories")
    idx, names, times, keys = [], [], [], []
    for i, c in enumerate(items):
        f = f"categoryHistories[{i}]"
        c = _obj(c, f)
        idx.append(_int(c.get("categoryIndex"), f"{f}.categoryIndex", 0, len(CATEGORY_NAMES) - 1))
        names.append(_str(c.get("categoryName"), f"{f}.categoryName"))
        times.append(_time(c.get("timeAt"), f"{f}.timeAt"))
        k = c.get("usingKeyboard")
        if k is not None and type(k) is not bool:
            raise _Bad(f"{f}.usingKeyboard", f"expected a boolean, got {_desc(k)}")
        keys.append(k is True)
    return (np.array(idx, np.int16), names, np.array(times, np.int64), np.array(keys, bool))


def _trace_fast(items: list) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorised trace conversion (list builds, type sets and numpy instead of a Python loop per point);
    None when anything is off, and the per-point path then names the first bad element."""
    try:
        xs = [p["x"] for p in items]
        ys = [p["y"] for p in items]
        ts = [p["timeAt"] for p in items]
    except (TypeError, KeyError):
        return None
    if not (set(map(type, xs)) <= _NUM and set(map(type, ys)) <= _NUM and set(map(type, ts)) == {int}):
        return None  # bool, null, string, …, or integral float times (valid, but converted one by one)
    xy = np.empty((len(items), 2), np.float64)
    xy[:, 0], xy[:, 1] = xs, ys
    if not (np.abs(xy) <= COORD_BOUND).all():  # NaN compares False
        return None
    try:
        t = np.array(ts, np.int64)
    except OverflowError:
        return None
    return xy.astype(np.float32), t


def _trace(raw: object) -> tuple[np.ndarray, np.ndarray]:
    items = _list(raw, "mouseTracking")
    fast = _trace_fast(items)
    if fast is not None:
        return fast
    xy, t = [], []
    for i, p in enumerate(items):
        f = f"mouseTracking[{i}]"
        p = _obj(p, f)
        xy.append((_coord(p.get("x"), f"{f}.x"), _coord(p.get("y"), f"{f}.y")))
        t.append(_time(p.get("timeAt"), f"{f}.timeAt"))
    return np.array(xy, np.float32).reshape(-1, 2), np.array(t, np.int64)


def to_sample(rec: object) -> CocoSample:
    """One decoded JSON record → CocoSample; raises ``_Bad`` naming the first bad field."""
    g = _obj(rec, "<record>").get
    s = CocoSample(
        image_id=_int(g("image_id"), "image_id", 0, INT64_MAX),
        worker_id=_str(g("worker_id"), "worker_id"),
        hit_id=_str(g("hit_id"), "hit_id"),
        page_id=_int(g("page_id"), "page_id", 0, SIZE_MAX, -1),
        image_width=_int(g("imageWidth"), "imageWidth", 0, SIZE_MAX, 0),
        image_height=_int(g("imageHeight"), "imageHeight", 0, SIZE_MAX, 0),
        original_width=_int(g("originalImageWidth"), "originalImageWidth", 0, SIZE_MAX, 0),
        original_height=_int(g("originalImageHeight"), "originalImageHeight", 0, SIZE_MAX, 0),
        time_spent=_int(g("timeSpent"), "timeSpent", 0, INT64_MAX, 0),
        actions=_actions(g("actionHistories")),
    )
    s.category_index, s.category_name, s.category_time, s.category_keyboard = _categories(g("categoryHistories"))
    s.trace_xy, s.trace_t = _trace(g("mouseTracking"))
    return s


def _first_char_kind(c: str) -> str:
    return {"{": "an object", '"': "a string", "t": "a boolean", "f": "a boolean", "n": "null"}.get(
        c, "a number" if c in "-0123456789" else "not JSON")


class _Elements:
    """Streams the elements of a top-level JSON array: yields (index, value, byte_start, byte_end).

    Holds one decoded chunk plus the unfinished element. Whole-file problems go to ``report(source,
    reason)`` and end the stream. Byte offsets are computed only when ``offsets`` (else 0, 0)."""

    def __init__(self, path: Path, report: Callable[[str, str], None], chunk_bytes: int,
                 offsets: bool, bar) -> None:
        self.path, self.report, self.chunk, self.offsets, self.bar = path, report, chunk_bytes, offsets, bar
        self.buf, self.pos = "", 0  # decoded text not yet dropped; parse position in it
        self.eof = self.broken = False
        self.anchor_pos, self.anchor_byte = 0, 0  # buf[anchor_pos] is file byte anchor_byte
        self.bytes_read = 0

    def _byte(self, p: int) -> int:
        """File byte offset of buf[p]; p never goes below the last call's (linear total cost)."""
        if self.buf.isascii():  # O(1) in CPython
            b = self.anchor_byte + p - self.anchor_pos
        else:
            b = self.anchor_byte + len(self.buf[self.anchor_pos:p].encode("utf-8"))
        self.anchor_pos, self.anchor_byte = p, b
        return b

    def _abs(self, p: int) -> int:
        """File byte of buf[p], for messages (within 3 bytes: the decoder may hold a partial character)."""
        return self.bytes_read - len(self.buf[p:].encode("utf-8"))

    def _more(self) -> bool:
        """Drop buf[:pos], append one decoded chunk; False at end of file or on invalid UTF-8."""
        if self.eof:
            return False
        data = self.f.read(self.chunk)
        self.bar.update(len(data))
        self.bytes_read += len(data)
        self.eof = not data
        try:
            text = self.dec.decode(data, final=self.eof)
        except UnicodeDecodeError as e:
            self.report(str(self.path), f"not valid UTF-8 near byte {self.bytes_read - len(data) + e.start}")
            self.eof = self.broken = True
            return False
        del data  # peak ≈ 3 chunks (old buffer, new text, their concatenation), not 4
        if self.offsets and self.pos:
            self._byte(self.pos)
        self.anchor_pos -= self.pos
        self.buf, self.pos = self.buf[self.pos:] + text, 0
        return not self.eof

    def _skip_ws(self) -> bool:
        """Move past whitespace, reading on as needed; False when the file ends first."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return True
            if not self._more():
                return False

    def _decode(self, index: int, raw_decode) -> tuple[object, int] | None:
        """Decode the element at buf[pos], reading on while it is unfinished; None after reporting."""
        while True:
            try:
                value, end = raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    return value, end
                need_more = True  # a top-level number may go on in the next chunk
            except json.JSONDecodeError as e:
                # Unfinished input fails at its end, except an unterminated string (fails at its start).
                need_more = e.msg.startswith("Unterminated string") or e.pos >= len(self.buf) - 8
                if self.eof or not need_more:
                    if not self.broken:
                        self.report(f"record {index}", "truncated: file ends inside the record" if need_more
                                    else f"invalid JSON near byte {self._abs(e.pos)}: {e.msg}")
                    return None
            except (ValueError, RecursionError) as e:  # an integer over 4300 digits; nesting too deep
                self.report(f"record {index}", f"invalid JSON near byte {self._abs(self.pos)}: {e}")
                return None
            if len(self.buf) - self.pos > MAX_RECORD_CHARS:
                self.report(f"record {index}", f"record longer than {MAX_RECORD_CHARS} characters")
                return None
            self._more()

    def __iter__(self) -> Iterator[tuple[int, object, int, int]]:
        self.dec = codecs.getincrementaldecoder("utf-8")()
        raw_decode = json.JSONDecoder().raw_decode
        with open(self.path, "rb") as self.f:
            if self.f.read(3) == codecs.BOM_UTF8:  # a UTF-8 byte-order mark is skipped
                self.anchor_byte = self.bytes_read = 3
                self.bar.update(3)
            else:
                self.f.seek(0)
            if not self._skip_ws():
                if not self.broken:
                    self.report(str(self.path), "empty or blank file: expected a JSON array")
                return
            if self.buf[self.pos] != "[":
                self.report(str(self.path),
                            f"top level must be a JSON array, got {_first_char_kind(self.buf[self.pos])}")
                return
            self.pos += 1
            index, after_comma = 0, False
            while True:
                if not self._skip_ws():
                    if not self.broken:
                        self.report(f"record {index}" if after_comma else str(self.path),
                                    f"truncated: file ends before the closing ']' (after {index} records)")
                    return
                c = self.buf[self.pos]
                if c == "]" and not after_comma:
                    break
                if index and not after_comma:
                    if c != ",":
                        self.report(f"record {index}", f"invalid JSON near byte {self._abs(self.pos)}: "
                                    f"expected ',' or ']' after record {index - 1}, got {c!r}")
                        return
                    self.pos += 1
                    after_comma = True
                    continue
                got = self._decode(index, raw_decode)
                if got is None:
                    return
                value, end = got
                b0 = self._byte(self.pos) if self.offsets else 0
                b1 = self._byte(end) if self.offsets else 0
                self.pos = end
                yield index, value, b0, b1
                index, after_comma = index + 1, False
            self.pos += 1
            if self._skip_ws():
                self.report(str(self.path), f"trailing data after the closing ']' near byte {self._abs(self.pos)}")


class CocoABReader:
    """Iterable over the CocoSample of one COCO-AB file; see the module docstring for the rules."""

    def __init__(self, path: str | os.PathLike, *, duplicates: str = "keep", strict: bool = False,
                 progress: bool = False, chunk_bytes: int = CHUNK_BYTES) -> None:
        if duplicates not in ("keep", "last"):
            raise ValueError(f"duplicates must be 'keep' or 'last', got {duplicates!r}")
        if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive int, got {chunk_bytes!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"COCO-AB file not found: {self.path}")
        self.duplicates, self.strict, self.progress, self.chunk_bytes = duplicates, strict, progress, chunk_bytes
        self.problems: list[ReadProblem] = []
        self.records_seen = 0
        self.duplicates_dropped = 0

    def _report(self, source: str, reason: str) -> None:
        if self.strict:
            raise DataError(f"{self.path}: {source}: {reason} (--strict: stopped at the first problem)")
        self.problems.append(ReadProblem(source, reason))

    def _bar(self, total: int, unit: str, desc: str) -> tqdm:
        return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, disable=not self.progress)

    def _usable(self, offsets: bool) -> Iterator[tuple[int, CocoSample, int, int]]:
        with self._bar(self.path.stat().st_size, "B", f"{self.path.name}") as bar:
            for i, value, b0, b1 in _Elements(self.path, self._report, self.chunk_bytes, offsets, bar):
                self.records_seen = i + 1
                try:
                    sample = to_sample(value)
                except _Bad as e:
                    self._report(f"record {i}", str(e))
                    continue
                yield i, sample, b0, b1

    def __iter__(self) -> Iterator[CocoSample]:
        self.problems, self.records_seen, self.duplicates_dropped = [], 0, 0
        if self.duplicates == "keep":
            for _, sample, _, _ in self._usable(offsets=False):
                yield sample
            return
        winners: dict[int, tuple[int, int, int]] = {}  # image_id → (record, byte start, byte end)
        usable = 0
        for i, sample, b0, b1 in self._usable(offsets=True):
            winners[sample.image_id] = (i, b0, b1)  # a re-assigned key keeps its first position, as in a dict
            usable += 1
        self.duplicates_dropped = usable - len(winners)
        with open(self.path, "rb") as f, self._bar(len(winners), "rec", "last per image_id") as bar:
            for i, b0, b1 in winners.values():
                f.seek(b0)
                try:
                    sample = to_sample(json.loads(f.read(b1 - b0)))
                except (ValueError, _Bad) as e:  # only if the file changed between the two passes
                    self._report(f"record {i}", f"changed while reading: {e}")
                    continue
                bar.update(1)
                yield sample


def read_coco_ab(path: str | os.PathLike, *, duplicates: str = "keep", strict: bool = False,
                 progress: bool = False, chunk_bytes: int = CHUNK_BYTES) -> CocoABReader:
    """Stream a COCO-AB JSON file (``coco_ab_v1_0.json``) as CocoSample.

    duplicates: "keep" (every usable record, file order) or "last" (one per image_id, last record wins,
    like the official loader's dict). strict: raise ValueError at the first problem (message names the
    record index and field) instead of collecting ReadProblem in ``.problems``. progress: tqdm bar by
    bytes read. chunk_bytes: read size (peak memory ≈ 3 × chunk + one record). Raises FileNotFoundError now if
    the file is missing; everything else surfaces while iterating."""
    return CocoABReader(path, duplicates=duplicates, strict=strict, progress=progress, chunk_bytes=chunk_bytes)
