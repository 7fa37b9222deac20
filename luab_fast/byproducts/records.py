"""In-memory records of the two byproduct releases, as the readers yield them (one per image file /
JSON record) and the packer consumes them. Formats: ../shared/docs/byproducts.md.

Coordinates stay as released: normalised to the displayed image, origin top-left, x right, y down (they
may slightly exceed [0, 1]). ImageNet-AB times are epoch milliseconds; COCO-AB times are milliseconds
since the page started.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _f32(n: int = 0, cols: int = 2) -> np.ndarray:
    return np.zeros((n, cols), np.float32)


def _i64(n: int = 0) -> np.ndarray:
    return np.zeros(n, np.int64)


@dataclass
class ImageNetRecord:
    """One ``<metadata>`` element: one worker seeing one image on one page."""

    worker_id: str = ""
    assignment_id: str = ""
    hit_id: str = ""
    page_idx: int = -1
    selected: bool = False  # text == "True"
    selected_count: int = 0
    hovered_count: int = 0
    estimate_time: int = 0  # ms the pointer hovered while not selected
    image_width: int = 0  # displayed size, px
    image_height: int = 0
    original_width: int = 0  # natural image size, px
    original_height: int = 0
    image_position: tuple[int, int] = (0, 0)  # page offset of the thumbnail, px
    click_xy: np.ndarray = field(default_factory=_f32)  # float32 [n, 2], every selectedRecord in order
    click_t: np.ndarray = field(default_factory=_i64)  # int64 [n] epoch ms
    trace_xy: np.ndarray = field(default_factory=_f32)  # float32 [p, 2], every mouseTracking in order
    trace_t: np.ndarray = field(default_factory=_i64)  # int64 [p] epoch ms
    hover_enter: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bool [h]: enter (True) / leave
    hover_t: np.ndarray = field(default_factory=_i64)  # int64 [h] epoch ms
    image_id_tag: str = ""  # <imageID> text ("<wnid>/<stem>") where the record has one, else ""


@dataclass
class ImageNetSample:
    """One ImageNet-AB XML file (``train_xml/<wnid>/<stem>.xml``)."""

    image_id: str  # the file stem, e.g. "n01440764_10026"
    wnid: str  # the folder, e.g. "n01440764"
    width: int = 0  # <size> of enriched files (original px); 0 when absent
    height: int = 0
    depth: int = 0  # <size><depth> (colour channels); 0 when absent
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # ILSVRC xmin,ymin,xmax,ymax px
    box_names: list[str] = field(default_factory=list)
    records: list[ImageNetRecord] = field(default_factory=list)


@dataclass
class CocoAction:
    action: str  # "add" | "move" | "remove"
    icon: str  # COCO category name, e.g. "person"
    point_from: tuple[float, float] | None  # (x, y) or None
    point_to: tuple[float, float] | None
    time: int  # ms since page start


@dataclass
class CocoSample:
    """One record of the COCO-AB JSON list."""

    image_id: int
    worker_id: str = ""
    hit_id: str = ""
    page_id: int = -1
    image_width: int = 0
    image_height: int = 0
    original_width: int = 0
    original_height: int = 0
    time_spent: int = 0
    actions: list[CocoAction] = field(default_factory=list)
    category_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))  # [c] 0–10
    category_time: np.ndarray = field(default_factory=_i64)  # [c] ms since page start
    category_keyboard: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # [c]
    trace_xy: np.ndarray = field(default_factory=_f32)  # float32 [p, 2]
    trace_t: np.ndarray = field(default_factory=_i64)  # int64 [p] ms since page start
    category_name: list[str] = field(default_factory=list)  # [c] as released, e.g. "Animal" ("" when null)


@dataclass
class ReadProblem:
    """A file or record the reader could not use, and why (collected, summarised by the CLI)."""

    source: str  # member path / file path / "record 123"
    reason: str
