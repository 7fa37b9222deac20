"""One ImageNet-AB XML file → ``ImageNetSample``: the pure-Python reference parser and the assembly of the
compiled batch parser's columns into the same objects.

The dialect (shared/docs/byproducts.md, 1a): root ``<annotation>``; ``<filename>``, ``<folder>``; for
ILSVRC-enriched files ``<size>`` and ``<object>`` boxes; 0..N ``<metadata>`` records, each with scalar
children and repeated ``selectedRecord`` / ``mouseTracking`` / ``hoveredRecord`` elements. Element order
is never relied on. Rules both parsers implement (the C++ one is tested equal to this one):

- text is an element's text before its first child, stripped of XML whitespace; a repeated scalar
  element: the first one counts (``Element.find``); unknown elements are ignored;
- integers ``[+-]?[0-9]+`` within int64; sizes, counts and ``page_idx`` must be >= 0;
- reals ``[+-]?(digits[.digits]|.digits)([eE][+-]?digits)?``, rounded to float64 then float32, that
  stay finite as float32 (so no NaN/inf);
- ``selected`` is ``True`` or ``False`` (absent: False); ``hoveredRecord/action`` is ``enter`` or ``leave``;
- every click / trace point needs ``x``, ``y`` and ``time``; every hover event ``action`` and ``time``;
  every ``<object>`` a full ``bndbox``; ``<imagePosition>`` both ``x`` and ``y``;
- a file needs a non-empty ``<filename>`` equal to its member stem (an extension is tolerated).

A violation raises ``ValueError`` naming the element; the reader turns it into a ``ReadProblem``.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from .records import ImageNetRecord, ImageNetSample

_WS = " \t\n\r"  # XML whitespace
_INT = re.compile(r"[+-]?[0-9]+\Z")
_REAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

# (tag, attribute); the int ones with whether the value must be >= 0. Order = columns of the C++ rec_int.
RECORD_STR = (("worker_id", "worker_id"), ("assignment_id", "assignment_id"), ("hit_id", "hit_id"),
              ("imageID", "image_id_tag"))
RECORD_INT = (("page_idx", "page_idx", True), ("selectedCount", "selected_count", True),
              ("hoveredCount", "hovered_count", True), ("estimateTime", "estimate_time", False),
              ("imageWidth", "image_width", True), ("imageHeight", "image_height", True),
              ("originalImageWidth", "original_width", True), ("originalImageHeight", "original_height", True))
SIZE_INT = ("width", "height", "depth")
BOX = ("xmin", "ymin", "xmax", "ymax")


def _text(el: ET.Element) -> str:
    return (el.text or "").strip(_WS)


def _int(text: str, what: str, nonneg: bool = False) -> int:
    if not _INT.match(text):
        raise ValueError(f"{what}: {text!r} is not an integer")
    v = int(text)
    if not _I64_MIN <= v <= _I64_MAX:
        raise ValueError(f"{what}: {text!r} does not fit in int64")
    if nonneg and v < 0:
        raise ValueError(f"{what}: {v} is negative")
    return v


_F32_OVERFLOW = 2.0**128 - 2.0**103  # the smallest magnitude that rounds to inf as float32


def _real(text: str, what: str) -> float:
    if not _REAL.match(text):
        raise ValueError(f"{what}: {text!r} is not a finite number")
    v = float(text)
    if not abs(v) < _F32_OVERFLOW:  # also catches inf from "1e999"
        raise ValueError(f"{what}: {text!r} is not finite as float32")
    return v


def _f32(values: list[float], cols: int) -> np.ndarray:
    return np.array(values, np.float64).astype(np.float32).reshape(-1, cols)  # float64 first, as C++ does


def _child(el: ET.Element, tag: str, what: str) -> str:
    c = el.find(tag)
    if c is None:
        raise ValueError(f"{what} has no <{tag}>")
    return _text(c)


def _events(m: ET.Element, tag: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Repeated ``<tag><x/><y/><time/></tag>`` → float32 [n, 2] and int64 [n]."""
    xy: list[float] = []
    t: list[int] = []
    for k, el in enumerate(m.findall(tag)):
        w = f"{what} {tag}[{k}]"
        xy += (_real(_child(el, "x", w), f"{w}/x"), _real(_child(el, "y", w), f"{w}/y"))
        t.append(_int(_child(el, "time", w), f"{w}/time"))
    return _f32(xy, 2), np.array(t, np.int64)


def parse_record(m: ET.Element, what: str = "metadata") -> ImageNetRecord:
    """One ``<metadata>`` element → ``ImageNetRecord`` (raises ValueError)."""
    r = ImageNetRecord()
    for tag, attr in RECORD_STR:
        el = m.find(tag)
        if el is not None:
            setattr(r, attr, _text(el))
    for tag, attr, nonneg in RECORD_INT:
        el = m.find(tag)
        if el is not None:
            setattr(r, attr, _int(_text(el), f"{what}/{tag}", nonneg))
    el = m.find("selected")
    if el is not None:
        s = _text(el)
        if s not in ("True", "False"):
            raise ValueError(f"{what}/selected: {s!r} is neither 'True' nor 'False'")
        r.selected = s == "True"
    el = m.find("imagePosition")
    if el is not None:
        w = f"{what}/imagePosition"
        r.image_position = (_int(_child(el, "x", w), f"{w}/x"), _int(_child(el, "y", w), f"{w}/y"))
    r.click_xy, r.click_t = _events(m, "selectedRecord", what)
    r.trace_xy, r.trace_t = _events(m, "mouseTracking", what)
    enter: list[bool] = []
    ht: list[int] = []
    for k, el in enumerate(m.findall("hoveredRecord")):
        w = f"{what} hoveredRecord[{k}]"
        a = _child(el, "action", w)
        if a not in ("enter", "leave"):
            raise ValueError(f"{w}/action: {a!r} is neither 'enter' nor 'leave'")
        enter.append(a == "enter")
        ht.append(_int(_child(el, "time", w), f"{w}/time"))
    r.hover_enter, r.hover_t = np.array(enter, bool), np.array(ht, np.int64)
    return r


def identity(name: str, filename: str | None, folder: str | None) -> tuple[str, str]:
    """(image_id, wnid) of a file: the member stem (checked against ``<filename>``) and its directory
    (else ``<folder>``, else the stem's prefix)."""
    if not filename:
        raise ValueError("missing <filename>")
    if not name:
        return filename, folder or filename.split("_", 1)[0]
    parts = name.replace("\\", "/").rsplit("/", 2)
    base = parts[-1]
    stem = base[:-4] if base.endswith(".xml") else base
    if filename != stem and filename.rsplit(".", 1)[0] != stem:
        raise ValueError(f"<filename> {filename!r} does not match the file name {base!r}")
    return stem, (parts[-2] if len(parts) > 1 else "") or folder or stem.split("_", 1)[0]


def parse_xml_reference(data: bytes, name: str = "") -> ImageNetSample:
    """Reference parser (xml.etree): one file's bytes (``name`` = its member path, used for the id)
    → ``ImageNetSample``; raises ValueError saying what is wrong."""
    try:
        root = ET.fromstring(data)
    except Exception as e:  # ParseError; LookupError for a declared encoding Python does not know; ...
        raise ValueError(f"malformed XML: {e}") from None
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, expected <annotation>")
    fn, fo = root.find("filename"), root.find("folder")
    image_id, wnid = identity(name, None if fn is None else _text(fn), None if fo is None else _text(fo))
    s = ImageNetSample(image_id=image_id, wnid=wnid)
    size = root.find("size")
    if size is not None:
        for tag in SIZE_INT:
            el = size.find(tag)
            if el is not None:
                setattr(s, tag, _int(_text(el), f"size/{tag}", True))
    boxes: list[float] = []
    for k, o in enumerate(root.findall("object")):
        w = f"object[{k}]"
        el = o.find("name")
        s.box_names.append("" if el is None else _text(el))
        bb = o.find("bndbox")
        if bb is None:
            raise ValueError(f"{w} has no <bndbox>")
        boxes += (_real(_child(bb, t, f"{w}/bndbox"), f"{w}/bndbox/{t}") for t in BOX)
    s.boxes = _f32(boxes, 4)
    s.records = [parse_record(m, f"metadata[{k}]") for k, m in enumerate(root.findall("metadata"))]
    return s


def _slices(a: np.ndarray, off: list[int]) -> list[np.ndarray]:
    return [a[i:j] for i, j in zip(off, off[1:])]


def _construct(cls: type, columns: dict[str, list], n: int) -> list:
    """``n`` instances of the dataclass ``cls`` from per-field columns, built positionally in field order
    (a third faster than keyword calls); a field without a column gets its default."""
    args = []
    for f in dataclasses.fields(cls):
        if f.name in columns:
            args.append(columns[f.name])
        elif f.default is not dataclasses.MISSING:
            args.append([f.default] * n)
        else:
            args.append([f.default_factory() for _ in range(n)])  # type: ignore[misc]
    return list(map(cls, *args))


def assemble(res: dict[str, Any], names: list[str]) -> list[ImageNetSample | ValueError | None]:
    """The compiled batch parser's columns → one entry per input: a sample, a ValueError (the file
    parsed but its identity is wrong), or None (the compiled parser refused it: re-parse with the
    reference, which has the last word on what is wrong). Arrays are views of the batch's columns."""
    ri, rs = res["rec_int"], res["rec_str"]
    c = ri.T.tolist()
    co, to, ho = res["click_off"].tolist(), res["trace_off"].tolist(), res["hover_off"].tolist()
    records = _construct(ImageNetRecord, dict(
        worker_id=rs[0::4], assignment_id=rs[1::4], hit_id=rs[2::4], image_id_tag=rs[3::4], page_idx=c[0],
        selected_count=c[1], hovered_count=c[2], estimate_time=c[3], image_width=c[4], image_height=c[5],
        original_width=c[6], original_height=c[7], image_position=list(zip(c[8], c[9])),
        selected=ri[:, 10].astype(bool).tolist(), click_xy=_slices(res["click_xy"], co),
        click_t=_slices(res["click_t"], co), trace_xy=_slices(res["trace_xy"], to),
        trace_t=_slices(res["trace_t"], to), hover_enter=_slices(res["hover_enter"], ho),
        hover_t=_slices(res["hover_t"], ho)), len(ri))

    n = len(names)
    ok = res["ok"].tolist()
    ids, wnids = [""] * n, [""] * n
    status: list[ValueError | None] = [None] * n
    for i, (name, filename, folder) in enumerate(zip(names, res["filename"], res["folder"])):
        if ok[i]:
            try:
                ids[i], wnids[i] = identity(name, filename, folder)
            except ValueError as e:
                status[i] = e
    ro, bo = res["rec_off"].tolist(), res["box_off"].tolist()
    bn = res["box_names"]
    w, h, d = res["size"].T.tolist()
    samples = _construct(ImageNetSample, dict(
        image_id=ids, wnid=wnids, width=w, height=h, depth=d, boxes=_slices(res["boxes"], bo),
        box_names=[bn[i:j] for i, j in zip(bo, bo[1:])], records=[records[i:j] for i, j in zip(ro, ro[1:])]), n)
    return [s if ok[i] and status[i] is None else status[i] for i, s in enumerate(samples)]
