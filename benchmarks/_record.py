"""What every benchmark shares: its size record (:class:`Size`) and :class:`Plan`, and the recorder that
collects each benchmark's two sides into one comparison, renders the markdown table and writes the JSON.

One comparison (an entry of ``benchmarks`` in the results file; see benchmarks/README.md):
``name, size, target, ours, baseline, ours_s, baseline_s, ratio, memory_ratio, throughput_unit,
agreement, status``; ``ours``/``baseline`` hold that side's timing stats, throughput and peak memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OURS = "ours"
BASELINE = "baseline"  # any provider other than OURS is recorded as the baseline side
UNIT = "labels/s"


class Size:
    """Base of a benchmark's size record. Subclass it as a ``@dataclass(frozen=True)`` holding only the
    workload's own fields, and give it a ``label``::

        @dataclass(frozen=True)
        class Crops(Size):
            n: int                # items per timed call: the throughput numerator (override n_items otherwise)
            points: int = 200
            unit: str = "crops"   # a field: stored in the results' ``size`` as well

            @property
            def label(self) -> str:
                return f"B={self.n} × {self.points} points"

    The results file stores :meth:`as_dict` as ``size`` and :attr:`label` as ``size_label``; throughput is
    ``n_items / median_s`` in ``unit``/s. A ``unit`` field without a default needs ``unit: str = field()``:
    dataclasses take the class default below as the field's default otherwise.
    """

    unit: str = "labels"  # what n_items counts; a subclass field of the same name overrides it

    @property
    def n_items(self) -> int:
        """How many ``unit`` one timed call processes: the field ``n`` unless a subclass says otherwise."""
        return self.n  # type: ignore[attr-defined]

    @property
    def label(self) -> str:
        """The size as the results table prints it."""
        raise NotImplementedError(f"{type(self).__name__} must define label")

    def as_dict(self) -> dict[str, Any]:
        """The dataclass fields in declaration order (the results file's ``size``)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Plan:
    """One benchmark in one mode: its size, timed rounds per provider, and the target printed beside it."""

    size: Size
    rounds: dict[str, int]
    target: str
COLUMNS = ("benchmark", "size", "ours", "baseline", "ratio (baseline/ours)", "memory ratio", "agreement",
           "target")


def timing_stats(benchmark: Any) -> dict[str, Any]:
    """pytest-benchmark's statistics of the rounds just run (empty under --benchmark-disable)."""
    meta = getattr(benchmark, "stats", None)
    if meta is None:
        return {}
    s = meta.stats
    return {"median_s": s.median, "min_s": s.min, "max_s": s.max, "mean_s": s.mean,
            "stddev_s": s.stddev if s.rounds > 1 else 0.0, "rounds": s.rounds}


class Recorder:
    """Session-wide store of comparisons (and of the baseline's answer, for ours to be checked against)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.rows: dict[str, dict[str, Any]] = {}
        self.answers: dict[tuple[str, str], Any] = {}

    def _row(self, name: str, plan: Plan) -> dict[str, Any]:
        return self.rows.setdefault(name, {
            "name": name, "size": plan.size.as_dict(), "size_label": plan.size.label, "target": plan.target,
            "ours": None, "baseline": None, "agreement": None})

    def side(self, name: str, provider: str, plan: Plan, *, impl: str, stats: dict[str, Any],
             n_iter: int | None = None, accuracy: float | None = None,
             memory: dict[str, Any] | None = None) -> None:
        """One provider's measurement: ``stats`` from :func:`timing_stats`, ``memory`` from _memory."""
        n = plan.size.n_items
        med = stats.get("median_s")
        entry = {"impl": impl, **stats, "n_iter": n_iter, "accuracy_vs_truth": accuracy,
                 "throughput": n / med if med else None,
                 "throughput_unit": f"{plan.size.unit}/s",
                 "label_iterations_per_s": n * n_iter / med if med and n_iter else None,
                 "peak_rss_mb": None, "peak_increase_mb": None, "memory_method": None}
        if memory:
            entry.update(peak_rss_mb=memory["peak_rss_mb"], peak_increase_mb=memory["peak_increase_mb"],
                         memory_method=memory["method"])
        self._row(name, plan)["ours" if provider == OURS else "baseline"] = entry

    def check(self, name: str, plan: Plan, *, metric: str, value: float, threshold: float, passed: bool,
              detail: str | None = None) -> None:
        """The correctness check of ``name`` (recorded before it is asserted, so failures are reported)."""
        self._row(name, plan)["agreement"] = {"metric": metric, "value": value, "threshold": threshold,
                                              "passed": bool(passed), "detail": detail}

    def comparisons(self) -> list[dict[str, Any]]:
        out = []
        for row in self.rows.values():
            ours, base = row["ours"] or {}, row["baseline"] or {}
            o_s, b_s = ours.get("median_s"), base.get("median_s")
            o_m, b_m = ours.get("peak_increase_mb"), base.get("peak_increase_mb")
            check = row["agreement"]
            status = "failed" if check and not check["passed"] else (
                "passed" if check and row["ours"] else "incomplete")
            out.append({**row, "ours_s": o_s, "baseline_s": b_s,
                        "ratio": b_s / o_s if o_s and b_s else None,
                        "memory_ratio": b_m / o_m if o_m and b_m else None,
                        "throughput_unit": ours.get("throughput_unit", UNIT), "status": status})
        return out


# -- rendering --------------------------------------------------------------------------------------------
def _seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s:.3g} s"


def _rate(r: float | None, unit: str = UNIT) -> str:
    if not r:
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if r >= div:
            return f"{r / div:.3g}{suffix} {unit}"
    return f"{r:.3g} {unit}"


def _mb(mb: float | None) -> str:
    if mb is None:
        return "n/a"
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _side_cell(side: dict[str, Any] | None) -> str:
    if not side:
        return "n/a"
    cell = f"{_seconds(side.get('median_s'))} · {_rate(side.get('throughput'), side.get('throughput_unit', UNIT))}"
    if side.get("peak_increase_mb") is not None:
        cell += f" · +{_mb(side['peak_increase_mb'])} peak"
    return cell


def _agreement_cell(check: dict[str, Any] | None) -> str:
    if not check:
        return "n/a"
    mark = "✓" if check["passed"] else "✗ FAIL"
    # shares (agreement ≥ 99.9%) as percentages; error bounds (max |Δ| ≤ 1e-9) in scientific notation
    share = "|Δ" not in check["metric"] and "error" not in check["metric"]
    text = (f"{check['value']:.2%} {check['metric']} {mark}" if share
            else f"{check['metric']} {check['value']:.1e} {mark}")
    return f"{text} ({check['detail']})" if check.get("detail") else text


def markdown_table(doc: dict[str, Any]) -> str:
    lines = [f"**luab_fast benchmarks** — {doc['mode']} mode, {doc['env']['device']}, "
             f"{doc['env']['threads'].get('luab_fast_omp_threads')} OpenMP threads, {doc['date']}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for c in doc["benchmarks"]:
        ratio = f"{c['ratio']:.1f}×" if c["ratio"] else "n/a"
        mem = "n/a"
        if c["memory_ratio"]:
            mem = f"{c['memory_ratio']:.1f}×"
        elif c["baseline"] is None and (c["ours"] or {}).get("peak_rss_mb") is not None:
            mem = f"n/a (ours peak {_mb(c['ours']['peak_rss_mb'])} RSS)"
        cells = [c["name"], c["size_label"], _side_cell(c["ours"]), _side_cell(c["baseline"]), ratio, mem,
                 _agreement_cell(c["agreement"]), c["target"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json_atomic(doc: dict[str, Any], path: Path) -> Path:
    """Writes ``doc`` next to ``path`` as a temp file, then renames it over ``path`` (no half files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
