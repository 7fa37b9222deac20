"""CocoSample stream → the columnar arrays of a COCO-AB store (one row per JSON record, duplicates kept)."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .._store.index import build_index
from ._pack_imagenet import CHUNK, _Column, _Interner
from .records import CocoSample

# The 80 COCO object categories in the order of their ids (1..90 with gaps): the index here is the
# dimension of the 80-way multi-label target.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
CLASS_INDEX = {name: i for i, name in enumerate(COCO_CLASSES)}
ACTIONS = {"add": 0, "move": 1, "remove": 2}


def last_add_points(icon: np.ndarray, kind: np.ndarray, to_xy: np.ndarray, off: np.ndarray) -> np.ndarray:
    """[N, 80, 2] float32 (x, y): per record and class, the ``pointTo`` of its *last* ``add`` action, as the
    official loader (``move``/``remove`` ignored); NaN when the class was never added."""
    n = len(off) - 1
    out = np.full((n, len(COCO_CLASSES), 2), np.nan, np.float32)
    rec = np.repeat(np.arange(n), np.diff(off))
    keep = (kind == ACTIONS["add"]) & (icon >= 0) & np.isfinite(to_xy).all(1)
    # assigning in action order makes the last add of a (record, class) pair the one that stays
    out[rec[keep], icon[keep]] = to_xy[keep]
    return out


def pack_coco_arrays(samples: Iterable[CocoSample]) -> dict[str, np.ndarray]:
    workers, hits, icons, cat_names = _Interner(), _Interner(), _Interner(), _Interner()
    col = {
        "image_id": _Column(np.int64), "worker": _Column(np.int32), "hit": _Column(np.int32),
        "page": _Column(np.int32), "display": _Column(np.int32, (2,)), "original": _Column(np.int32, (2,)),
        "time_spent": _Column(np.int64),
        "n_actions": _Column(np.int64), "action_kind": _Column(np.int8), "action_icon": _Column(np.int16),
        "action_icon_name": _Column(np.int32), "action_from": _Column(np.float32, (2,)),
        "action_to": _Column(np.float32, (2,)), "action_t": _Column(np.int64),
        "n_cats": _Column(np.int64), "cat_index": _Column(np.int16, (), True), "cat_t": _Column(np.int64, (), True),
        "cat_keyboard": _Column(bool, (), True), "cat_name": _Column(np.int32),
        "n_trace": _Column(np.int64), "trace_xy": _Column(np.float32, (2,), True),
        "trace_t": _Column(np.int64, (), True),
    }
    for name, c in col.items():
        c.name = name
    nan2 = (np.nan, np.nan)
    for k, s in enumerate(samples, 1):
        col["image_id"].cur.append(s.image_id)
        col["worker"].cur.append(workers(s.worker_id))
        col["hit"].cur.append(hits(s.hit_id))
        col["page"].cur.append(s.page_id)
        col["display"].cur.append((s.image_width, s.image_height))
        col["original"].cur.append((s.original_width, s.original_height))
        col["time_spent"].cur.append(s.time_spent)
        col["n_actions"].cur.append(len(s.actions))
        for a in s.actions:
            col["action_kind"].cur.append(ACTIONS.get(a.action, -1))
            col["action_icon"].cur.append(CLASS_INDEX.get(a.icon, -1))
            col["action_icon_name"].cur.append(icons(a.icon))
            col["action_from"].cur.append(a.point_from if a.point_from is not None else nan2)
            col["action_to"].cur.append(a.point_to if a.point_to is not None else nan2)
            col["action_t"].cur.append(a.time)
        col["n_cats"].cur.append(len(s.category_index))
        col["cat_index"].cur.append(np.asarray(s.category_index))
        col["cat_t"].cur.append(np.asarray(s.category_time))
        col["cat_keyboard"].cur.append(np.asarray(s.category_keyboard))
        for name in s.category_name:
            col["cat_name"].cur.append(cat_names(name))
        col["n_trace"].cur.append(len(s.trace_t))
        col["trace_xy"].cur.append(np.asarray(s.trace_xy))
        col["trace_t"].cur.append(np.asarray(s.trace_t))
        if k % CHUNK == 0:
            for c in col.values():
                c.flush()

    def offsets(name: str) -> np.ndarray:
        return col[name].offsets()

    arrays = {"action_offsets": offsets("n_actions"), "cat_offsets": offsets("n_cats"),
              "trace_offsets": offsets("n_trace"), "workers": workers.table(), "hits": hits.table(),
              "icon_names": icons.table(), "category_names": cat_names.table()}
    for name, c in col.items():
        if not name.startswith("n_"):
            arrays[name] = c.array()
    image_id = arrays["image_id"]
    # the row of an image id is its LAST record (the official loader's "last record wins")
    last = len(image_id) - 1 - np.unique(image_id[::-1], return_index=True)[1]
    arrays["index_rows"] = np.sort(last)
    arrays["index"] = build_index(image_id[arrays["index_rows"]])
    arrays["add_points"] = last_add_points(arrays["action_icon"], arrays["action_kind"], arrays["action_to"],
                                           arrays["action_offsets"])
    return arrays
