"""What a labelling project's round writes and prints: ``next.csv`` (task, hit), ``done.csv`` (task, label,
risk), ``labels.csv`` (task, label) and ``posteriors.csv`` (task, one column per class) — the two formats
``python -m luab_fast.train --labels`` takes —, ``workers.csv``, ``round.png`` and a one-screen summary."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from .project import Project


def class_labels(proj: Project) -> list[str]:
    s = proj.settings
    return list(s.class_names) if s.class_names else [str(k) for k in range(s.n_classes)]


def worker_table(proj: Project) -> pd.DataFrame:
    """Per worker: labels sent, estimated accuracy (mean posterior of the class it gave: the chance it was right
    under the current aggregate) and whether it reached the per-worker cap."""
    st, s = proj.state, proj.settings
    t, w, z = st.labels
    n = len(st.worker_ids)
    count = np.bincount(w, minlength=n)[:n]
    right = np.bincount(w, weights=st.post[t, z], minlength=n)[:n]
    acc = np.divide(right, count, out=np.full(n, np.nan), where=count > 0)
    return pd.DataFrame({"worker": st.worker_ids, "labels": count, "estimated_accuracy": np.round(acc, 4),
                         "at_cap": count + s.hit_size > s.max_per_worker})


def write_outputs(proj: Project, folder: Path) -> None:
    """Every output of the current round into ``folder`` (a temporary the caller renames into place)."""
    st, s = proj.state, proj.settings
    ids = np.asarray(proj.task_ids, dtype=object)
    names = np.asarray(class_labels(proj), dtype=object)
    pd.DataFrame({"task": ids[st.next], "hit": st.next_hit}).to_csv(folder / "next.csv", index=False)
    label = st.post.argmax(1)
    done = np.flatnonzero(st.risk < s.risk_threshold)
    pd.DataFrame({"task": ids[done], "label": names[label[done]], "risk": np.round(st.risk[done], 6)}).to_csv(
        folder / "done.csv", index=False)
    pd.DataFrame({"task": ids, "label": names[label]}).to_csv(folder / "labels.csv", index=False)
    write_table_csv(folder / "posteriors.csv", proj.task_ids, ["task", *map(str, names)], st.post)
    worker_table(proj).to_csv(folder / "workers.csv", index=False)
    plot(pd.DataFrame(st.history), folder / "round.png")


def write_table_csv(path: Path, ids: list[str], header: list[str], values: np.ndarray, chunk: int = 16384) -> None:
    """``path``: the header, then a row per id: the id and its ``values`` row as float32, each the shortest decimal
    that reads back as the same float32. Formatted by the C++ extension on every core (``_C.io.csv_rows``):
    pandas' to_csv took ~15 s for ImageNet-100's 125,689 × 100 posteriors and pyarrow's writer 1.2 s, most of
    an annotation round."""
    from .._ext import require_ext

    C = require_ext("writing posteriors.csv")
    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow(header)  # quotes a class name holding a comma, as pandas does
    table = np.ascontiguousarray(values, dtype=np.float32)
    with open(path, "wb") as f:
        f.write(head.getvalue().encode())
        for r0 in range(0, len(ids), chunk):
            f.write(C.io.csv_rows(ids[r0:r0 + chunk], table[r0:r0 + chunk]))


def plot(history: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    try:
        for ax, col, title in zip(axes, ("done_fraction", "labels_per_image", "estimated_accuracy"),
                                  ("done (risk under threshold)", "labels per image", "estimated accuracy")):
            ax.plot(history["round"], history[col], marker="o", ms=3)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        axes[0].set_ylim(0, 1.02)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)


def summary(proj: Project, repeated: bool = False) -> str:
    """The one-screen text ``next`` and ``status`` print."""
    st, s = proj.state, proj.settings
    h = st.history[-1]
    N = len(proj.task_ids)
    capped = int(((st.task_counts >= s.max_per_task) & (st.risk >= s.risk_threshold)).sum())
    lines = [f"project {proj.root}: {N:,} tasks, {s.n_classes} classes, method {s.method}, round {st.round}"
             + (" (unchanged: no new labels)" if repeated else "")]
    lines += [f"  {r}" for r in st.report]
    lines.append(f"labels {h['labels']:,} ({h['labels_per_image']:.2f} per image) from {len(st.worker_ids)} workers; "
                 f"done {int(round(h['done_fraction'] * N)):,} ({h['done_fraction']:.1%}, risk < {s.risk_threshold:g})"
                 f"; estimated accuracy {h['estimated_accuracy']:.3f}")
    if capped:
        lines.append(f"{capped:,} task{'s' if capped > 1 else ''} reached {s.max_per_task} labels without reaching the "
                     "risk threshold: no more labels are asked (see the risk in posteriors.csv)")
    at_cap = int(worker_table(proj)["at_cap"].sum())
    if at_cap:
        lines.append(f"{at_cap} workers reached the per-worker cap of {s.max_per_worker} labels (workers.csv)")
    if st.next.size:
        n_hits = int(st.next_hit.max()) + 1
        lines.append(f"next: {st.next.size:,} tasks in {n_hits} HITs of up to {s.hit_size} -> {proj.root / 'next.csv'}")
    else:
        lines.append("next: nothing to send: every task is done or has its labels (next.csv is empty)")
    lines.append("outputs: next.csv done.csv labels.csv posteriors.csv workers.csv round.png")
    return "\n".join(lines)
