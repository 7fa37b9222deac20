"""Workers for the online annotation loop: the seed's simulated AMT workers and a replay of real labels.

Simulation follows the efficient-annotation seed (``online_label/worker.py``, docs: ../shared/docs/aggregation.md
§A "Worker simulation") on its real Mechanical Turk data: 58 workers, each a 100×100 count matrix [true class,
given label] over 40 images, split across 6 fine-grained class groups.

Class order: every [.., 100, 100] matrix and every class index here is in the order of the JSON's
``imagenet100`` list (the matrices' order), not groups.txt's; ``AMTData.groups`` gives each group's wnids in
groups.txt order (group 0 is the seed's Dog split, ``imagenet_split_0``). The JSON's ``total_cm`` (a
row-normalised matrix the seed never reads) is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .._cli import DataError
from ..aggregate._input import encode

ENV_DIR = "LUAB_FAST_AMT_DIR"
DEFAULT_DIR = Path(__file__).resolve().parent / "amt_workers"  # shipped with the package (amt_workers/SOURCE.md)
NOISE_LEVEL = 0.03  # the seed's "according to the amt stats" share of in-group mass spread outside the group
LABEL_CHUNK = 1 << 15  # labels drawn per vectorised chunk in SimulatedWorkers.label
WORKER_WEIGHT = 10  # the seed adds 10× the sampled real worker's counts to its group's pooled counts


@dataclass(frozen=True)
class AMTData:
    """The real AMT worker data. ``counts`` rows/cols are in ``wnids`` order; workers in the JSON's group order."""

    wnids: tuple[str, ...]  # [100] ImageNet100 wnids, the matrices' class order
    names: tuple[str, ...]  # [100] human-readable names ("" when the file has none)
    groups: tuple[tuple[str, ...], ...]  # [6] wnids of each group, groups.txt order
    class_group: np.ndarray  # int64 [100] group id of each class
    counts: np.ndarray  # int64 [58, 100, 100] per-worker counts [true class, given label]
    worker_group: np.ndarray  # int64 [58] group id of each worker
    group_order: tuple[int, ...]  # groups in the JSON's order: the order the seed draws one worker per group
    path: Path

    def class_indices(self, classes: Sequence[str] | Sequence[int] | np.ndarray) -> np.ndarray:
        """Positions (int64 [K]) of ``classes`` (wnids, any case, or indices into ``wnids``), K >= 2, unique."""
        arr = np.asarray(list(classes) if not isinstance(classes, np.ndarray) else classes)
        if arr.ndim != 1 or arr.size < 2:
            raise ValueError(f"classes must be a 1-D list of at least 2 wnids or indices, got shape {arr.shape}")
        if arr.dtype.kind in "iu":
            idx = arr.astype(np.int64)
            bad = (idx < 0) | (idx >= len(self.wnids))
            if bad.any():
                raise ValueError(f"classes indices must be in [0, {len(self.wnids)}), got {idx[bad][:5].tolist()}")
        elif arr.dtype.kind in "UO":
            pos = {w: i for i, w in enumerate(self.wnids)}
            unknown = [c for c in arr.tolist() if str(c).lower() not in pos]
            if unknown:
                raise ValueError(f"classes has wnids not in the AMT data: {unknown[:5]}")
            idx = np.array([pos[str(c).lower()] for c in arr.tolist()], np.int64)
        else:
            raise ValueError(f"classes must be wnids (str) or integer indices, got dtype {arr.dtype}")
        if np.unique(idx).size != idx.size:
            raise ValueError("classes must not repeat a class")
        return idx


MAX_COUNT = 2**31 - 1  # far above any real count; keeps the int64 sums over workers and groups exact


def load_amt(path: str | os.PathLike | None = None) -> AMTData:
    """Reads ``group_workers.json`` and ``groups.txt`` from ``path``, else $LUAB_FAST_AMT_DIR, else the copy the
    package ships (``luab_fast/annotate/amt_workers``). Raises ``DataError`` (a ValueError) naming the file when
    missing, unreadable or malformed."""
    from_env = path is None and bool(os.environ.get(ENV_DIR))
    root = Path(path if path is not None else os.environ.get(ENV_DIR) or DEFAULT_DIR)
    where = f"${ENV_DIR}={root}" if from_env else str(root)
    jpath, gpath = root / "group_workers.json", root / "groups.txt"
    for p in (jpath, gpath):
        if not p.is_file():
            state = "is a folder" if p.is_dir() else "not found"
            raise DataError(f"AMT worker data {p} {state} (from {where}); expected group_workers.json and "
                            f"groups.txt there (pass path= or set ${ENV_DIR} to such a folder)")
    try:
        raw = json.loads(jpath.read_text())
        wnids = tuple(str(w).lower() for w in raw["imagenet100"])
        by_group = raw["group_workers"]
        mats = [np.asarray(v, dtype=np.float64) for v in by_group.values()]
        group_order = tuple(int(k) for k in by_group)
        K0 = len(wnids)
        names = tuple(str(n) for n in raw.get("imagenet100_name", [""] * K0))
    except OSError as e:
        raise DataError(f"AMT worker data {jpath} cannot be read: {e.strerror or e}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        # ValueError covers UnicodeDecodeError and ragged matrices; AttributeError a list where a dict goes
        raise DataError(f"malformed AMT worker data {jpath}: {type(e).__name__}: {str(e)[:200]}; expected the "
                        "seed's group_workers.json (imagenet100, group_workers)") from None
    try:
        text = gpath.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"AMT worker data {gpath} cannot be read as text: {e}") from None
    groups = tuple(tuple(line.strip().lower() for line in block.splitlines() if line.strip())
                   for block in text.split("\n\n") if block.strip())
    pos = {w: i for i, w in enumerate(wnids)}
    listed = [w for g in groups for w in g]

    def bad(msg: str) -> DataError:
        return DataError(f"malformed AMT worker data in {where}: {msg}")

    if K0 < 2 or len(pos) != K0 or len(names) != K0:
        raise bad(f"imagenet100 must hold at least 2 unique wnids with as many names, got {K0} wnids "
                  f"({len(pos)} unique) and {len(names)} names")
    if sorted(listed) != sorted(wnids):
        raise bad("groups.txt must list every imagenet100 wnid exactly once")
    if sorted(group_order) != list(range(len(groups))):
        raise bad(f"group_workers keys must be 0..{len(groups) - 1} (one per groups.txt group), got {group_order}")
    for g, m in zip(group_order, mats):
        if m.ndim != 3 or m.shape[1:] != (K0, K0) or m.shape[0] == 0:
            raise bad(f"group {g} must hold [n>=1, {K0}, {K0}] count matrices, got shape {m.shape}")
        if not np.isfinite(m).all() or (m < 0).any() or (m > MAX_COUNT).any() or (m != np.round(m)).any():
            raise bad(f"group {g} counts must be non-negative integers <= {MAX_COUNT}")
    class_group = np.empty(K0, np.int64)
    for g, members in enumerate(groups):
        class_group[[pos[w] for w in members]] = g
    return AMTData(wnids=wnids, names=names, groups=groups, class_group=class_group,
                   counts=np.concatenate(mats).astype(np.int64),
                   worker_group=np.repeat(np.array(group_order, np.int64), [len(m) for m in mats]),
                   group_order=group_order, path=root)


def pooled_counts(amt: AMTData, classes) -> np.ndarray:
    """All real workers' counts summed, restricted to ``classes``: float64 [K, K], the seed's ``global_cm``
    (feed it to ``luab_fast.aggregate.homogeneous_prior`` for the seed's default prior)."""
    keep = amt.class_indices(classes)
    return amt.counts.sum(0)[np.ix_(keep, keep)].astype(np.float64)


def _sample_picks(amt: AMTData, n_workers: int, seed: int, n_draw: int) -> np.ndarray:
    """Real worker picked per simulated worker and group: int64 [W, G] rows of ``amt.counts``. Replays the
    seed's RNG exactly: RandomState(seed + i), ``choice(n_g, n_draw)`` per group in JSON order, first kept."""
    starts = np.concatenate([[0], np.cumsum([np.sum(amt.worker_group == g) for g in amt.group_order])])
    sizes = np.diff(starts)
    picks = np.empty((n_workers, len(sizes)), np.int64)
    for i in range(n_workers):
        rs = np.random.RandomState(seed + i)
        picks[i] = [starts[j] + rs.choice(sizes[j], n_draw)[0] for j in range(len(sizes))]
    return picks


def _base_matrices(amt: AMTData, keep: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Pooled counts + 10× the picked workers' counts, restricted to ``keep`` and row-normalised: [W, K, K]."""
    sub = amt.counts[:, keep][:, :, keep].astype(np.float64)
    m = sub.sum(0) + WORKER_WEIGHT * sub[picks].sum(1)
    rows = m.sum(-1, keepdims=True)
    if (rows == 0).any():  # the seed asserts this; it happens when a class's labels all fall outside `classes`
        empty = np.unique(np.nonzero(rows[..., 0] == 0)[1])
        raise DataError(f"classes {[amt.wnids[keep[k]] for k in empty[:5]]} have no labels inside `classes` in the "
                        f"AMT worker data {amt.path}; choose other classes or complete the data")
    return m / rows  # exact division (the seed adds 1e-8 to the row sum: a < 1e-10 relative difference)


def _spread_across_groups(m: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Moves 3% of each row's in-group mass uniformly to the classes outside the true class's group.
    A row whose group covers every class in the subset (e.g. the Dog split alone) is left unchanged,
    as in the seed: there is nowhere to move the mass. Rows keep summing to 1."""
    same = group[:, None] == group[None, :]  # [K, K]
    n_out = (~same).sum(1)  # [K]
    moved = (m * same).sum(-1, keepdims=True) * NOISE_LEVEL  # [W, K, 1]
    share = np.divide(moved, n_out[:, None], out=np.zeros_like(moved), where=n_out[:, None] > 0)
    spread = np.where(same, m * (1 - NOISE_LEVEL), m + share)
    return np.where((n_out > 0)[:, None], spread, m)


def structured_workers(amt: AMTData, classes, n_workers: int = 50, seed: int = 0) -> np.ndarray:
    """The seed's ``amt_structured_noise``: float64 [W, K, K] row-stochastic confusion matrices [true, given]."""
    keep = amt.class_indices(classes)
    _check_count("n_workers", n_workers)
    _check_seed(seed, n_workers)
    m = _base_matrices(amt, keep, _sample_picks(amt, n_workers, seed, n_draw=1))
    return _spread_across_groups(m, amt.class_group[keep])


def uniform_workers(amt: AMTData, classes, n_workers: int = 50, seed: int = 0) -> np.ndarray:
    """The seed's ``amt_uniform_noise``: the sampled matrix's diagonal kept, off-diagonal (1 − diag)/(K − 1),
    then the same 3% spread. Like the seed it draws 10 candidate workers per group and keeps the first, so
    its matrices differ from ``structured_workers`` at the same seed (the RNG streams diverge)."""
    keep = amt.class_indices(classes)
    _check_count("n_workers", n_workers)
    _check_seed(seed, n_workers)
    m = _base_matrices(amt, keep, _sample_picks(amt, n_workers, seed, n_draw=10))
    K = keep.size
    diag = np.diagonal(m, axis1=1, axis2=2)  # [W, K]
    u = np.repeat(((1 - diag) / (K - 1))[:, :, None], K, axis=2)
    u[:, np.arange(K), np.arange(K)] = diag
    return _spread_across_groups(u, amt.class_group[keep])


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_seed(seed, n_workers: int) -> int:
    """Worker i draws from ``RandomState(seed + i)``, which takes 0..2**32 - 1."""
    top = 2**32 - n_workers
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= top:
        raise ValueError(f"seed must be an integer in [0, {top}] (seed + n_workers < 2**32), got {seed!r}")
    return int(seed)


def from_matrices(cms) -> np.ndarray:
    """Validates user-given confusion matrices: float64 [W, K, K], finite, >= 0, rows summing to 1 (1e-6)."""
    try:
        m = np.asarray(cms, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cms must be a numeric [W, K, K] array, got {type(cms).__name__} ({e})") from None
    if m.ndim != 3 or m.shape[1] != m.shape[2] or m.shape[0] < 1 or m.shape[1] < 2:
        raise ValueError(f"cms must be [W, K, K] with W >= 1 and K >= 2, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("cms must be finite, found NaN or inf")
    if (m < 0).any():
        raise ValueError(f"cms must be >= 0, worker {int(np.nonzero(m < 0)[0][0])} has a negative entry")
    err = np.abs(m.sum(-1) - 1)
    if (err > 1e-6).any():
        w, y = np.argwhere(err > 1e-6)[0]
        raise ValueError(f"cms rows must sum to 1 (within 1e-6): worker {w}, row {y} sums to {m[w, y].sum():.6g}")
    return np.ascontiguousarray(m)


def index_array(values, name: str, upper: int) -> np.ndarray:
    """``values`` as int64 [n] in [0, upper); ValueError naming ``name`` otherwise."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):  # ragged nested lists
        raise ValueError(f"{name} must be a 1-D integer array, got {type(values).__name__}") from None
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        raise ValueError(f"{name} must be in [0, {upper}), got values in [{arr.min()}, {arr.max()}]")
    return arr


class SimulatedWorkers:
    """Workers answering with z ~ Categorical(cms[w, y_true]); ``cms`` float64 [W, K, K] [true, given]."""

    def __init__(self, cms) -> None:
        self.cms = from_matrices(cms)
        self._cdf = np.cumsum(self.cms, axis=-1)
        self._cdf[..., -1] = 1.0  # so a uniform draw just under 1 can never fall past the last class

    @property
    def n_workers(self) -> int:
        return self.cms.shape[0]

    @property
    def n_classes(self) -> int:
        return self.cms.shape[1]

    @property
    def accuracy(self) -> np.ndarray:
        """Mean diagonal per worker, float64 [W] (the accuracy under a uniform class prior)."""
        return np.diagonal(self.cms, axis1=1, axis2=2).mean(1)

    def label(self, tasks, workers, truth, rng: np.random.Generator) -> np.ndarray:
        """Labels int64 [n] for tasks [n] (indices into truth [N]) answered by workers [n]; one uniform
        per label, inverted through the worker's row CDF (class = number of CDF entries <= u)."""
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        truth = index_array(truth, "truth", self.n_classes)
        tasks = index_array(tasks, "tasks", truth.size)
        workers = index_array(workers, "workers", self.n_workers)
        if tasks.size != workers.size:
            raise ValueError(f"tasks and workers must have the same length, got {tasks.size} and {workers.size}")
        u = rng.random(tasks.size)
        y = truth[tasks]
        out = np.empty(tasks.size, np.int64)
        for s in range(0, tasks.size, LABEL_CHUNK):  # chunks bound the [chunk, K] CDF gather's memory
            e = s + LABEL_CHUNK
            out[s:e] = (self._cdf[workers[s:e], y[s:e]] <= u[s:e, None]).sum(1)
        return out


class ReplayWorkers:
    """Real labels replayed in collection order. Ids are dense (order of first appearance); the original
    ones are in ``task_ids``, ``worker_ids`` and ``classes`` (sorted label values). Within a task, labels
    are always consumed as a prefix of its collection order, whether through ``next_labels`` or ``take``."""

    def __init__(self, df: pd.DataFrame) -> None:
        enc = encode(df)  # validates columns / NaNs, keeps row order
        self.task, self.worker, self.label = enc.task, enc.worker, enc.label  # int64 [M] each
        self.task_ids, self.worker_ids, self.classes = enc.task_ids, enc.worker_ids, enc.classes
        order = np.argsort(self.task, kind="stable")  # rows grouped by task, collection order within
        self._by_task = order
        self._count = np.bincount(self.task, minlength=self.n_tasks)  # [T]
        self._start = np.concatenate([[0], np.cumsum(self._count)[:-1]])  # [T]
        self._rank = np.empty(self.n_labels, np.int64)  # position of each row within its task
        self._rank[order] = np.arange(self.n_labels) - self._start[self.task[order]]
        self.reset()

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> "ReplayWorkers":
        """A CSV with columns task (or item), worker, label; rows in collection order."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"label CSV {p} {'is a folder' if p.is_dir() else 'not found'}; expected a CSV file "
                            "with columns task (or item), worker, label")
        try:
            df = pd.read_csv(p)
        except (OSError, UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError) as e:
            raise DataError(f"label CSV {p} cannot be read as a CSV table ({type(e).__name__}: "
                            f"{str(e).strip()[:200]}); expected columns task (or item), worker, label") from None
        if "task" not in df.columns and "item" in df.columns:
            df = df.rename(columns={"item": "task"})
        return cls(df)

    n_tasks = property(lambda self: len(self.task_ids))
    n_workers = property(lambda self: len(self.worker_ids))
    n_classes = property(lambda self: len(self.classes))
    n_labels = property(lambda self: int(self.task.size))

    def reset(self) -> None:
        self._used = np.zeros(self.n_tasks, np.int64)  # labels consumed per task: always a prefix

    @property
    def n_remaining(self) -> int:
        return self.n_labels - int(self._used.sum())

    def available(self) -> np.ndarray:
        """Unused labels per task, int64 [T]."""
        return self._count - self._used

    def available_for(self, task: int) -> int:
        return int(self.available()[index_array([task], "task", self.n_tasks)[0]])

    def next_labels(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next ``n`` unused rows in collection order (fewer at the end): (task, worker, label) int64."""
        n = _check_count("n", n, minimum=0)
        rows = np.flatnonzero(self._rank >= self._used[self.task])[:n]
        self._used += np.bincount(self.task[rows], minlength=self.n_tasks)
        return self.task[rows], self.worker[rows], self.label[rows]

    def take(self, tasks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each requested task (repeats allowed), its next unused label in collection order. Tasks
        with none left are dropped, so the result can be shorter: (task, worker, label) int64."""
        tasks = index_array(tasks, "tasks", self.n_tasks)
        order = np.argsort(tasks, kind="stable")
        sorted_t = tasks[order]
        first = np.searchsorted(sorted_t, sorted_t)  # first position of each value: rank among repeats
        dup_rank = np.empty_like(tasks)
        dup_rank[order] = np.arange(tasks.size) - first
        k = self._used[tasks] + dup_rank
        ok = k < self._count[tasks]
        rows = self._by_task[self._start[tasks[ok]] + k[ok]]
        self._used += np.bincount(tasks[ok], minlength=self.n_tasks)
        return self.task[rows], self.worker[rows], self.label[rows]
