"""Simulated annotation byproducts for the demo's train split, written in the real ImageNet-AB release
format (shared/docs/byproducts.md, section 1a) so the library's own reader and packer consume them
unchanged: a ``.tar.gz`` of ``train_xml/<wnid>/<stem>.xml``, one ILSVRC-"enriched" XML per image (the
digit's box as the ``<object>``) holding one ``<metadata>`` record per simulated annotator.

A record mimics one worker on one page of a HIT (10 pages × 48 thumbnails, 3-column grid of 243-px
thumbnails): the pointer enters at the thumbnail's edge, moves toward the digit (minimum-jerk progress
plus a sideways wander), lingers near it, then clicks — inside the digit's box, or, with probability
``miss_rate``, somewhere off the digit. With probability ``reselect_rate`` the worker deselects and
selects again (a second ``selectedRecord``, ``selectedCount`` 2; recording resumes while unselected).
Timing follows the release: samples ≈ 47 ms apart (≥ 17 ms, the front end's 60 Hz throttle) and
``estimateTime`` (hover time while unselected) log-normal with mean ≈ 750 ms and mode ≈ 350 ms;
times are epoch ms inside the collection window (18 Dec 2021 – 5 Jan 2022).
"""

from __future__ import annotations

import gzip
import io
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ._demo_crowd import worker_ids

DISPLAY = 243  # thumbnail size in the annotation tool's grid, px
PAGE_IMAGES, PAGES = 48, 10  # a HIT: 10 pages of 48 thumbnails
T_WINDOW = (1_639_800_000_000, 1_641_300_000_000)  # epoch ms of the collection period
# log-normal hover time: mean exp(mu + s²/2) = 750 ms, mode exp(mu − s²) = 350 ms (byproducts.md, §4)
_S = math.sqrt(2.0 / 3.0 * math.log(750 / 350))
_MU = math.log(750) - _S**2 / 2
_ALNUM = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_MTIME = 1641000000  # fixed tar member mtime: the archive must be byte-identical for a seed


@dataclass
class Annotator:
    """One simulated worker: its ids and its own clock (epoch ms), advanced record by record."""

    worker_id: str
    hit_id: str
    assignment_id: str
    clock: int
    n_seen: int = 0


def make_annotators(rng: np.random.Generator, n: int) -> list[Annotator]:
    ids = worker_ids(rng, n)
    out = []
    for w in ids:
        hit, asg = ("".join(rng.choice(_ALNUM, 30)) for _ in range(2))
        start = int(rng.integers(T_WINDOW[0], T_WINDOW[1] - 86_400_000))  # room for a day of work
        out.append(Annotator(w, hit, asg, start))
    return out


def _offsets(rng: np.random.Generator, span: float) -> np.ndarray:
    """int64 sample times (ms) from 0, gaps ≥ 17 (the 60 Hz throttle) with mean ≈ 47, all within ``span``."""
    n = max(2, int(span / 47) + 8)
    csum = np.cumsum(17 + np.round(rng.gamma(1.5, 20.0, n)).astype(np.int64))
    return np.concatenate([[0], csum[csum <= span]])


def _target(rng: np.random.Generator, box: tuple[int, int, int, int], size: int, miss: bool) -> tuple[float, float]:
    """A click point in pixels: near the box centre and ≥ 1 px inside it, or ≥ 2 px outside it (a miss)."""
    x0, y0, x1, y1 = box
    if not miss:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x = np.clip(cx + rng.normal(0, 0.2 * (x1 - x0)), x0 + 1, x1 - 1)
        y = np.clip(cy + rng.normal(0, 0.2 * (y1 - y0)), y0 + 1, y1 - 1)
        return float(x), float(y)
    for _ in range(100):
        x, y = rng.uniform(1, size - 1, 2)
        if x < x0 - 2 or x > x1 + 2 or y < y0 - 2 or y > y1 + 2:
            return float(x), float(y)
    return 1.0, 1.0  # a box covering the whole canvas leaves no room: the corner is as far off as it gets


def _path(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, n_move: int, n_linger: int) -> np.ndarray:
    """[n_move + n_linger, 2] normalised points: a minimum-jerk approach with a sideways bow, then a
    small random walk around ``end``."""
    tau = np.linspace(0, 1, n_move)  # the first sample is at the entry point
    s = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
    d = end - start
    normal = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9)
    bow = rng.normal(0, 0.12) * np.sin(np.pi * tau)
    move = start + s[:, None] * d + bow[:, None] * normal + rng.normal(0, 0.004, (n_move, 2))
    linger = end + np.cumsum(rng.normal(0, 0.006, (n_linger, 2)), 0)
    return np.clip(np.concatenate([move, linger]), 0.0, 1.0)


def _entry(rng: np.random.Generator) -> np.ndarray:
    """Where the pointer comes in: a random edge of the thumbnail, just inside it."""
    along, depth = rng.uniform(0.05, 0.95), rng.uniform(0.0, 0.03)
    return np.array([(depth, along), (1 - depth, along), (along, depth), (along, 1 - depth)][rng.integers(4)])


def simulate_record(rng: np.random.Generator, who: Annotator, box: tuple[int, int, int, int], size: int,
                    miss: bool, reselect: bool) -> dict:
    """One ``<metadata>`` record as a dict (keys as in ``record_xml``); advances ``who``'s clock."""
    hover = float(np.clip(rng.lognormal(_MU, _S), 120, 8000))  # ≈ estimateTime: first move → click, ms
    delay = int(rng.integers(15, 120))  # last trace sample → click
    t_first = who.clock + int(rng.integers(5, 40))
    times = t_first + _offsets(rng, hover - delay)
    n_move = max(1, int(len(times) * rng.uniform(0.4, 0.75)))
    tx, ty = _target(rng, box, size, miss)
    end = np.array([tx / size, ty / size])
    xy = _path(rng, _entry(rng), end, n_move, len(times) - n_move)
    xy[-1] = np.clip(end + rng.normal(0, 0.003, 2), 0, 1)  # the pointer is where it will click
    t_click = int(times[-1]) + delay
    clicks = [(end[0], end[1], t_click)]
    trace = [(float(x), float(y), int(t)) for (x, y), t in zip(xy, times)]
    estimate = t_click - t_first
    t_last = t_click
    if reselect:  # deselect (no record), tracking resumes while unselected, then select again
        t_off = t_click + int(rng.integers(300, 900))
        tx2, ty2 = _target(rng, box, size, miss)
        end2 = np.array([tx2 / size, ty2 / size])
        times2 = t_off + 20 + _offsets(rng, float(rng.uniform(150, 600)))
        xy2 = _path(rng, end, end2, max(1, len(times2) - 2), min(2, len(times2) - 1))
        trace += [(float(x), float(y), int(t)) for (x, y), t in zip(xy2, times2)]
        t_last = int(times2[-1] + rng.integers(15, 120))
        clicks.append((end2[0], end2[1], t_last))
        estimate += t_last - t_off
    t_enter = t_first - int(rng.integers(5, 40))
    t_leave = t_last + int(rng.integers(150, 900))
    slot = who.n_seen % PAGE_IMAGES
    rec = dict(assignment_id=who.assignment_id, estimate_time=int(estimate), hit_id=who.hit_id, hovered_count=1,
               hover=[("enter", t_enter), ("leave", t_leave)], image_size=DISPLAY,
               image_position=(40 + 343 * (slot % 3), 310 + 283 * (slot // 3)), trace=trace, original=size,
               page_idx=(who.n_seen // PAGE_IMAGES) % PAGES, selected_count=len(clicks), clicks=clicks,
               worker_id=who.worker_id)
    who.n_seen += 1
    who.clock = t_leave + int(rng.integers(200, 3000))  # on to the next thumbnail
    return rec


def _num(v: float) -> str:
    return repr(round(float(v), 4))


def _point(tag: str, x: float, y: float, t: int) -> str:
    return f"<{tag}><time>{t}</time><x>{_num(x)}</x><y>{_num(y)}</y></{tag}>"


def record_xml(r: dict) -> str:
    """A record's ``<metadata>`` element; tags in alphabetical order, as observed in the release."""
    p = [f"<assignment_id>{r['assignment_id']}</assignment_id>", f"<estimateTime>{r['estimate_time']}</estimateTime>",
         f"<hit_id>{r['hit_id']}</hit_id>", f"<hoveredCount>{r['hovered_count']}</hoveredCount>"]
    p += [f"<hoveredRecord><action>{a}</action><time>{t}</time></hoveredRecord>" for a, t in r["hover"]]
    px, py = r["image_position"]
    p += [f"<imageHeight>{r['image_size']}</imageHeight>",
          f"<imagePosition><x>{px}</x><y>{py}</y></imagePosition>", f"<imageWidth>{r['image_size']}</imageWidth>"]
    p += [_point("mouseTracking", *xyt) for xyt in r["trace"]]
    p += [f"<originalImageHeight>{r['original']}</originalImageHeight>",
          f"<originalImageWidth>{r['original']}</originalImageWidth>", f"<page_idx>{r['page_idx']}</page_idx>",
          "<selected>True</selected>", f"<selectedCount>{r['selected_count']}</selectedCount>"]
    p += [_point("selectedRecord", *xyt) for xyt in r["clicks"]]
    p.append(f"<worker_id>{r['worker_id']}</worker_id>")
    return "\t<metadata>\n" + "".join(f"\t\t{e}\n" for e in p) + "\t</metadata>\n"


def file_xml(stem: str, wnid: str, box: tuple[int, int, int, int], size: int, records: list[dict]) -> bytes:
    """An ILSVRC-enriched file: folder, filename, source, size, segmented, the digit as ``<object>``
    (its box in pixels: x0, y0 inclusive, x1, y1 exclusive, as in the demo manifest), then the records."""
    x0, y0, x1, y1 = box
    head = (f"<annotation>\n\t<folder>{wnid}</folder>\n\t<filename>{stem}</filename>\n"
            f"\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n"
            f"\t<size>\n\t\t<width>{size}</width>\n\t\t<height>{size}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
            f"\t<segmented>0</segmented>\n\t<object>\n\t\t<name>{wnid}</name>\n\t\t<pose>Unspecified</pose>\n"
            f"\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n"
            f"\t\t\t<ymin>{y0}</ymin>\n\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>\n")
    body = "".join(record_xml(r) for r in records)
    return (head + body + "</annotation>\n").encode()


def _add(tf: tarfile.TarFile, name: str, data: bytes | None) -> None:
    ti = tarfile.TarInfo(name)
    ti.mtime = _MTIME
    if data is None:
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(ti)
    else:
        ti.size, ti.mode = len(data), 0o644
        tf.addfile(ti, io.BytesIO(data))


def write_byproducts(path: Path, images: Iterable[tuple[str, str, tuple[int, int, int, int]]], size: int,
                     seed: np.random.SeedSequence, *, annotators: tuple[int, int] = (2, 4), n_workers: int = 40,
                     miss_rate: float = 0.1, reselect_rate: float = 0.05,
                     tick: Callable[[], None] | None = None) -> dict[str, int]:
    """Writes the ``.tar.gz`` for ``images`` = (wnid, stem, digit box px) of the train split; each image
    gets ``annotators[0]..annotators[1]`` distinct workers out of ``n_workers``. The gzip header carries
    no name or time, so the archive is byte-identical for a seed. Returns counts (files, records,
    misses, reselects). ``tick`` is called once per image (progress)."""
    lo, hi = annotators
    if not 1 <= lo <= hi <= n_workers:
        raise ValueError(f"annotators must be (lo, hi) with 1 <= lo <= hi <= n_workers={n_workers}, got {annotators}")
    for name, v in (("miss_rate", miss_rate), ("reselect_rate", reselect_rate)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    rng = np.random.default_rng(seed)
    pool = make_annotators(rng, n_workers)
    stats = dict(files=0, records=0, misses=0, reselects=0)
    by_wnid: dict[str, list] = {}
    for wnid, stem, box in images:
        by_wnid.setdefault(wnid, []).append((stem, box))
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf:
        _add(tf, "train_xml", None)
        for wnid in sorted(by_wnid):
            _add(tf, f"train_xml/{wnid}", None)
            for stem, box in by_wnid[wnid]:
                who = rng.choice(n_workers, int(rng.integers(lo, hi + 1)), replace=False)
                recs = []
                for w in who:
                    miss, resel = bool(rng.random() < miss_rate), bool(rng.random() < reselect_rate)
                    recs.append(simulate_record(rng, pool[w], box, size, miss, resel))
                    stats["misses"] += miss
                    stats["reselects"] += resel
                _add(tf, f"train_xml/{wnid}/{stem}.xml", file_xml(stem, wnid, box, size, recs))
                stats["files"] += 1
                stats["records"] += len(recs)
                if tick is not None:
                    tick()
    return stats
