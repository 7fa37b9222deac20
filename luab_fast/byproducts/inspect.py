"""Statistics of a packed store (``info``) and a picture of one image's byproducts (``show``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import check_destination
from .._store.cli import save_store_figure
from .._store.errors import damaged
from .store import ByproductStore


def _pct(x: np.ndarray, qs=(5, 25, 50, 75, 95)) -> dict[str, float]:
    if x.size == 0:
        return {}
    out = {f"p{q}": float(np.percentile(x, q)) for q in qs}
    out["max"] = float(x.max())
    out["mean"] = float(x.mean())
    return out


def store_stats(store: ByproductStore) -> dict[str, Any]:
    """Counts and distributions a user checks after packing a release."""
    a = store.arrays
    n_rec = len(a["rec_selected"])
    rec_per_sample = np.diff(a["rec_offsets"])
    trace_len = np.diff(a["trace_offsets"])
    clicks = np.diff(a["click_offsets"])
    selected = np.asarray(a["rec_selected"])
    dwell = np.asarray(a["rec_estimate_time"])
    t, off = np.asarray(a["trace_t"]), np.asarray(a["trace_offsets"])
    gaps = np.diff(t)
    same_trace = np.ones(max(len(t) - 1, 0), bool)
    inner_starts = off[1:-1][(off[1:-1] > 0) & (off[1:-1] < len(t))]
    same_trace[inner_starts - 1] = False  # a gap across two records' traces is not a sampling interval
    xy = np.asarray(a["trace_xy"])
    return {
        "samples": len(store),
        "records": n_rec,
        "workers": int(len(np.unique(a["rec_worker"]))) if n_rec else 0,
        "records_per_sample": _pct(rec_per_sample),
        "samples_without_records": int((rec_per_sample == 0).sum()),
        "samples_with_boxes": int((np.diff(a["box_offsets"]) > 0).sum()),
        "selected_rate": float(selected.mean()) if n_rec else 0.0,
        "click_rate": float((selected & (clicks > 0)).mean()) if n_rec else 0.0,
        "samples_with_click_target": int(np.isfinite(np.asarray(a["click_point"])).all(1).sum()),
        "points_per_trace": _pct(trace_len),
        "empty_traces": int((trace_len == 0).sum()),
        "trace_points": int(len(t)),
        "trace_points_out_of_range": int(((xy < 0) | (xy > 1)).any(1).sum()) if len(xy) else 0,
        "sampling_interval_ms": _pct(gaps[same_trace]) if len(gaps) else {},
        "dwell_ms": _pct(dwell[dwell > 0]),
    }


def coco_stats(store) -> dict[str, Any]:
    """Counts and distributions of a COCO-AB store."""
    a = store.arrays
    kinds = np.asarray(a["action_kind"])
    trace_len = np.diff(a["trace_offsets"])
    return {
        "records": len(store),
        "images": int(len(np.unique(a["image_id"]))),
        "workers": int(len(np.unique(a["worker"]))) if len(store) else 0,
        "actions_per_record": _pct(np.diff(a["action_offsets"])),
        "add_move_remove": f"{(kinds == 0).sum():,} / {(kinds == 1).sum():,} / {(kinds == 2).sum():,}",
        "unknown_icons": int((np.asarray(a["action_icon"]) < 0).sum()),
        "points_per_trace": _pct(trace_len),
        "empty_traces": int((trace_len == 0).sum()),
        "time_spent_ms": _pct(np.asarray(a["time_spent"])),
    }


def format_stats(stats: dict[str, Any]) -> str:
    lines = []
    for key, value in stats.items():
        if isinstance(value, dict):
            body = ", ".join(f"{k} {v:,.1f}" for k, v in value.items()) or "-"
            lines.append(f"{key:<28} {body}")
        elif isinstance(value, str):
            lines.append(f"{key:<28} {value}")
        elif isinstance(value, float):
            lines.append(f"{key:<28} {value:.4f}")
        else:
            lines.append(f"{key:<28} {value:,}")
    return "\n".join(lines)


def draw(store: ByproductStore, image_id: str, out: str | os.PathLike, image: str | os.PathLike | None = None) -> Path:
    """Traces (coloured by time, one line per worker), clicks and ILSVRC boxes over the image (or over a
    blank canvas of the original size), saved atomically to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_destination(out, "out")  # before the drawing, which may take a while
    if getattr(store, "kind", "imagenet") == "coco":
        return _draw_coco(store, int(image_id), out, image)
    i = store.row(image_id)
    w, h = store.size(i)
    store.trace(i), store.clicks(i), store.boxes(i)  # raise StoreError for a damaged row before drawing it
    workers = store.arrays["workers"]
    rec_off = store.arrays["rec_offsets"]
    rec_workers = np.asarray(store.arrays["rec_worker"][rec_off[i]:rec_off[i + 1]])
    if len(rec_workers) and (rec_workers.min() < 0 or rec_workers.max() >= len(workers)):
        raise damaged(store.path, f"'rec_worker' of row {i} points outside 'workers'")
    fig, ax, w, h = _canvas(image, w, h)
    a = store.arrays
    rec_lo, rec_hi = a["rec_offsets"][i], a["rec_offsets"][i + 1]
    sc = None
    for r in range(rec_lo, rec_hi):
        lo, hi = a["trace_offsets"][r], a["trace_offsets"][r + 1]
        xy, t = np.asarray(a["trace_xy"][lo:hi]), np.asarray(a["trace_t"][lo:hi])
        if len(xy):
            rel = (t - t[0]) / max(int(t[-1] - t[0]), 1)
            ax.plot(xy[:, 0] * w, xy[:, 1] * h, color="0.4", lw=0.8, alpha=0.6)
            sc = ax.scatter(xy[:, 0] * w, xy[:, 1] * h, c=rel, cmap="viridis", s=14, vmin=0, vmax=1, zorder=3)
        clo, chi = a["click_offsets"][r], a["click_offsets"][r + 1]
        cxy = np.asarray(a["click_xy"][clo:chi])
        if len(cxy):
            ax.scatter(cxy[:, 0] * w, cxy[:, 1] * h, marker="x", s=80, color="red", zorder=4,
                       label=f"clicks of {workers[a['rec_worker'][r]].decode('utf-8', 'replace')}")
    for x0, y0, x1, y1 in store.boxes(i):
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="orange", lw=2))
    if sc is not None:
        fig.colorbar(sc, ax=ax, shrink=0.7, label="time within the trace (0 = first point)")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(f"{image_id}: {rec_hi - rec_lo} annotation records")
    if rec_hi > rec_lo and len(store.clicks(i)[0]):
        ax.legend(loc="lower right", fontsize=7)
    return save_store_figure(fig, out)


def _draw_coco(store, image_id: int, out, image) -> Path:
    """COCO-AB: the record's trace coloured by time and its icons' final positions, labelled."""
    from ._pack_coco import COCO_CLASSES

    i = store.row(image_id)
    a = store.arrays
    w, h = (int(v) for v in a["original"][i])
    fig, ax, w, h = _canvas(image, w, h)
    xy, t = store.trace(i)
    if len(xy):
        sc = ax.scatter(xy[:, 0] * w, xy[:, 1] * h, c=t, cmap="viridis", s=12, zorder=3)
        ax.plot(xy[:, 0] * w, xy[:, 1] * h, color="0.4", lw=0.6, alpha=0.6)
        fig.colorbar(sc, ax=ax, shrink=0.7, label="ms since the page started")
    pts = np.asarray(a["add_points"][i])
    for c in np.flatnonzero(np.isfinite(pts).all(1)):
        ax.scatter(pts[c, 0] * w, pts[c, 1] * h, marker="x", s=80, color="red", zorder=4)
        ax.annotate(COCO_CLASSES[c], (pts[c, 0] * w, pts[c, 1] * h), color="red", fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(f"COCO image {image_id}: trace and placed icons (last record)")
    return save_store_figure(fig, out)


def _canvas(image, w: int, h: int):
    """(fig, ax, w, h): ``image`` drawn at its own size, or a blank w×h canvas (1×1 when the size is unknown)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7 * (h / w) if w and h else 7))
    if image is not None:
        from PIL import Image

        img = Image.open(image).convert("RGB")
        w, h = img.size
        ax.imshow(img)
    else:
        w, h = (w or 1), (h or 1)
        ax.add_patch(plt.Rectangle((0, 0), w, h, color="0.92"))
    return fig, ax, w, h
