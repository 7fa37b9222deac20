"""Byproducts: ImageNet-AB parsing (files/s) and per-crop point targets (samples/s), ours beside the way
the official dataloader notebook does it, in one process on one synthetic release; plus the store's open
time. Data: tests/fixtures/imagenet_ab.py::write_many (the real format), generated once per session.
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks._record import BASELINE, OURS, Plan, Recorder, Size, timing_stats
from luab_fast.byproducts import ByproductStore, write_imagenet_store
from luab_fast.byproducts.imagenet_ab import read_imagenet_ab
from tests.fixtures.imagenet_ab import write_many


@dataclass(frozen=True)
class Items(Size):
    """A workload of ``n`` items (files, samples) for the results table."""

    n: int
    unit: str = field()  # required (a bare annotation would take Size's default)
    what: str

    @property
    def label(self) -> str:
        return f"{self.n:,} {self.what}"


N_FILES = {"quick": 2_000, "full": 20_000}
BATCH = 256
PARSE_TARGET = "≥ 20,000 files/s (ours, from the .tar.gz)"


@pytest.fixture(scope="module")
def release(bench: Recorder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("imagenet_ab")
    info = write_many(root, N_FILES[bench.mode], seed=0, extract=True)
    store = write_imagenet_store(read_imagenet_ab(info["tar"]), root / "ab.store")
    return {**info, "store": store}


def notebook_targets(xml_dir: Path) -> dict[str, tuple[float, float] | None]:
    """imagenet_dataloader.ipynb's per-image work: ET.parse each file, average the first selectedRecord of
    the selected records."""
    out: dict[str, tuple[float, float] | None] = {}
    for wnid in sorted(os.listdir(xml_dir)):
        for f in sorted(os.listdir(xml_dir / wnid)):
            pts = []
            for m in ET.parse(xml_dir / wnid / f).getroot().findall("metadata"):
                rec = m.find("selectedRecord")
                if m.find("selected").text == "True" and rec is not None:
                    pts.append((float(rec.find("x").text), float(rec.find("y").text)))
            out[f[:-4]] = tuple(np.mean(pts, 0)) if pts else None
    return out


def test_imagenet_ab_parse(benchmark: Any, bench: Recorder, release: dict[str, Any]) -> None:
    items = Items(release["n_files"], "files", "XML files in a .tar.gz")
    plan = Plan(items, {BASELINE: 3, OURS: 5}, PARSE_TARGET)
    t0 = time.perf_counter()
    xml_dir = Path(release["dir"])
    base = notebook_targets(xml_dir / "train_xml" if (xml_dir / "train_xml").is_dir() else xml_dir)
    base_s = time.perf_counter() - t0
    bench.side("imagenet_ab_parse", BASELINE, plan, impl="xml.etree.parse per extracted file (official notebook)",
               stats={"median_s": base_s, "min_s": base_s, "rounds": 1})

    def parse() -> None:
        reader = read_imagenet_ab(release["tar"])
        n = sum(1 for _ in reader)
        assert n == release["n_files"] and not reader.problems

    benchmark.group = "imagenet_ab_parse"
    benchmark.pedantic(parse, rounds=plan.rounds[OURS], warmup_rounds=1, iterations=1)
    bench.side("imagenet_ab_parse", OURS, plan, impl="read_imagenet_ab(.tar.gz), every field",
               stats=timing_stats(benchmark))
    # correctness: the store's click targets equal the notebook's
    store = ByproductStore.open(release["store"])
    ours_pts = np.asarray(store.arrays["click_point"])
    rows = store.rows(list(base))
    want = np.array([p if p is not None else (np.nan, np.nan) for p in base.values()], np.float64)
    same = float(np.mean(np.isclose(ours_pts[rows], want, atol=1e-6, equal_nan=True).all(1)))
    bench.check("imagenet_ab_parse", plan, metric="same click targets", value=same, threshold=1.0,
                passed=same == 1.0, detail=f"{len(base):,} files")
    assert same == 1.0


def _baseline_point_targets(store: ByproductStore, rows, boxes, flips) -> tuple[np.ndarray, np.ndarray]:
    """The official loader's per-sample Python: clicks → mean first click → crop → flip → inside test."""
    a = store.arrays
    pts, ws = np.full((len(rows), 2), -1.0, np.float32), np.zeros(len(rows), np.float32)
    for k, (i, (x0, y0, x1, y1), f) in enumerate(zip(rows, boxes, flips)):
        firsts = [a["click_xy"][a["click_offsets"][r]] for r in range(a["rec_offsets"][i], a["rec_offsets"][i + 1])
                  if a["rec_selected"][r] and a["click_offsets"][r + 1] > a["click_offsets"][r]]
        if not firsts:
            continue
        x, y = np.mean(np.asarray(firsts, np.float64), 0).astype(np.float32)
        u, v = (x - x0) / (x1 - x0), (y - y0) / (y1 - y0)
        u = 1 - u if f else u
        if 0 <= u <= 1 and 0 <= v <= 1:
            pts[k], ws[k] = (u, v), 1.0
    return pts, ws


def test_point_targets(benchmark: Any, bench: Recorder, release: dict[str, Any]) -> None:
    import torch

    store = ByproductStore.open(release["store"])
    plan = Plan(Items(BATCH, "samples", "crops (B=256)"), {BASELINE: 5, OURS: 50}, "faster than per-sample Python")
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(store), BATCH)
    lo = rng.uniform(0, 0.5, (BATCH, 2))
    hi = lo + rng.uniform(0.2, 0.5, (BATCH, 2))
    boxes = np.concatenate([lo, np.minimum(hi, 1.0)], 1).astype(np.float32)[:, [0, 1, 2, 3]]
    flips = rng.random(BATCH) < 0.5
    times = []
    for _ in range(plan.rounds[BASELINE]):
        t0 = time.perf_counter()
        want = _baseline_point_targets(store, rows, boxes, flips)
        times.append(time.perf_counter() - t0)
    bench.side("point_targets", BASELINE, plan, impl="per-sample Python (official loader logic)",
               stats={"median_s": float(np.median(times)), "min_s": min(times), "rounds": len(times)})
    r_t, b_t, f_t = torch.from_numpy(rows), torch.from_numpy(boxes), torch.from_numpy(flips)
    store.point_targets(r_t, b_t, f_t)  # builds the cached tensors once
    benchmark.group = "point_targets"
    got = benchmark.pedantic(store.point_targets, args=(r_t, b_t, f_t), rounds=plan.rounds[OURS], warmup_rounds=2)
    bench.side("point_targets", OURS, plan, impl="ByproductStore.point_targets (torch, CPU)",
               stats=timing_stats(benchmark))
    same = float(np.mean(np.isclose(got[0].numpy(), want[0], atol=1e-5).all(1) & (got[1].numpy() == want[1])))
    bench.check("point_targets", plan, metric="same targets", value=same, threshold=1.0, passed=same == 1.0,
                detail=f"{int(want[1].sum())} of {BATCH} crops hold their click")
    assert same == 1.0


def test_store_open(benchmark: Any, bench: Recorder, release: dict[str, Any]) -> None:
    plan = Plan(Items(release["n_files"], "samples", "samples (store open)"), {OURS: 20}, "< 1 s at 1.3M samples")
    benchmark.group = "store_open"
    store = benchmark.pedantic(ByproductStore.open, args=(release["store"],), rounds=plan.rounds[OURS], warmup_rounds=1)
    assert len(store) == release["n_files"]
    bench.side("store_open", OURS, plan, impl="ByproductStore.open (memory map + manifest check)",
               stats=timing_stats(benchmark))
