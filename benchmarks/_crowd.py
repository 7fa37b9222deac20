"""The aggregation benchmarks' plan: sizes per mode, and the estimator each provider runs.

Shared by ``bench_aggregate.py`` (timing, in the pytest process) and ``_memory.py`` (peak RSS, in a fresh
subprocess), so both measure exactly the same call on exactly the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from benchmarks._record import OURS, Plan, Size

CROWDKIT = "crowd-kit"  # the aggregation benchmarks' baseline provider
PROVIDERS = (CROWDKIT, OURS)  # the baseline runs first: ours is then checked against its answer


@dataclass(frozen=True)
class CrowdSize(Size):
    """A synthetic crowd of ``luab_fast.aggregate.make_crowd``: tasks × workers × labels/task × classes."""

    n_tasks: int
    n_workers: int
    labels_per_task: int
    n_classes: int
    seed: int = 0

    @property
    def n_labels(self) -> int:
        return self.n_tasks * self.labels_per_task

    n_items = n_labels  # throughput in labels/s

    @property
    def label(self) -> str:
        return (f"{_short(self.n_tasks)}×{_short(self.n_workers)}×{self.labels_per_task}×{self.n_classes} "
                f"({_short(self.n_labels)} labels)")

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "n_labels": self.n_labels}


def _short(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return str(n)


QUICK = CrowdSize(10_000, 200, 5, 20)
QUICK_ONECOIN = CrowdSize(5_000, 100, 5, 10)  # crowd-kit's OneCoin is a pandas apply over W·K rows per iteration
FULL = CrowdSize(100_000, 1_000, 5, 100)  # ../shared/docs/performance.md: crowd-kit 49–58 s, 1.62 GB
SCALE = CrowdSize(2_000_000, 1_000, 5, 100)  # 10M labels: crowd-kit would need ~27 GB

DS_TARGET = "≥100× faster, ≤1/10 memory, ≥99.9% same labels"
MV_TARGET = "same probas; same labels except ties"
ONECOIN_TARGET = "≥99.9% same labels"
SCALE_TARGET = "10M labels × 100 classes; no baseline"

PLANS: dict[str, dict[str, Plan]] = {
    "quick": {
        "dawid_skene": Plan(QUICK, {CROWDKIT: 3, OURS: 10}, DS_TARGET),
        "dawid_skene_fp32": Plan(QUICK, {OURS: 10}, DS_TARGET),
        "majority_vote": Plan(QUICK, {CROWDKIT: 5, OURS: 20}, MV_TARGET),
        "one_coin": Plan(QUICK_ONECOIN, {CROWDKIT: 1, OURS: 10}, ONECOIN_TARGET),
    },
    "full": {
        # crowd-kit takes ~50 s here: one round; ours the median of several
        "dawid_skene": Plan(FULL, {CROWDKIT: 1, OURS: 5}, DS_TARGET),
        # the same crowd-kit run is the baseline (timed once above); ours with float32 tables
        "dawid_skene_fp32": Plan(FULL, {OURS: 5}, DS_TARGET),
        "majority_vote": Plan(FULL, {CROWDKIT: 5, OURS: 10}, MV_TARGET),
        "scale": Plan(SCALE, {OURS: 1}, SCALE_TARGET),
    },
}

#: what each side is called in the results
IMPL = {
    ("dawid_skene", OURS): "luab_fast DawidSkene(prior=0.0, prior_diag=0.0)",
    ("dawid_skene", CROWDKIT): "crowd-kit DawidSkene()",
    ("dawid_skene_fp32", OURS): "luab_fast DawidSkene(prior=0.0, prior_diag=0.0, precision='float32')",
    ("dawid_skene_fp32", CROWDKIT): "crowd-kit DawidSkene()",
    ("majority_vote", OURS): "luab_fast MajorityVote()",
    ("majority_vote", CROWDKIT): "crowd-kit MajorityVote()",
    ("one_coin", OURS): "luab_fast OneCoinDawidSkene()",
    ("one_coin", CROWDKIT): "crowd-kit OneCoinDawidSkene()",
    ("scale", OURS): "luab_fast DawidSkene(prior=0.0, prior_diag=0.0)",
}


def make_estimator(case: str, provider: str) -> Any:
    """A fresh estimator; imports only the provider's library (the memory subprocess measures one side)."""
    if provider == OURS:
        from luab_fast.aggregate import DawidSkene, MajorityVote, OneCoinDawidSkene

        ours: dict[str, Callable[[], Any]] = {
            "dawid_skene": lambda: DawidSkene(prior=0.0, prior_diag=0.0),  # crowd-kit's unsmoothed DS
            "dawid_skene_fp32": lambda: DawidSkene(prior=0.0, prior_diag=0.0, precision="float32"),
            "scale": lambda: DawidSkene(prior=0.0, prior_diag=0.0),
            "majority_vote": MajorityVote,
            "one_coin": OneCoinDawidSkene,
        }
        return ours[case]()
    if provider == CROWDKIT:
        from crowdkit.aggregation import DawidSkene, MajorityVote, OneCoinDawidSkene

        base: dict[str, Callable[[], Any]] = {
            "dawid_skene": DawidSkene, "majority_vote": MajorityVote, "one_coin": OneCoinDawidSkene}
        return base[case]()
    raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")


def n_em_iterations(estimator: Any) -> int | None:
    """EM iterations the fit ran (ours: ``n_iter_``; crowd-kit: one loss per iteration), None for MV."""
    if hasattr(estimator, "n_iter_"):
        return int(estimator.n_iter_)
    history = getattr(estimator, "loss_history_", None)
    return len(history) if history else None
