"""``python -m luab_fast.aggregate``: aggregate a crowd CSV, or, with no file, run the built-in demo.

    python -m luab_fast.aggregate                       # demo: synthetic crowd, every method side by side
    python -m luab_fast.aggregate label.csv --truth truth.csv --method ds --plot workers.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import METHODS
from .synthetic import make_crowd

TASK_ALIASES = ("task", "item", "image", "example")


def read_labels(path: str) -> pd.DataFrame:
    """A CSV of (task, worker, label); an ``item``/``image`` column is taken as the task id."""
    df = pd.read_csv(path)
    if "task" not in df.columns:
        alias = next((c for c in TASK_ALIASES if c in df.columns), None)
        if alias is None:
            raise SystemExit(f"error: {path} needs columns task (or item), worker, label; got {list(df.columns)}")
        df = df.rename(columns={alias: "task"})
    return df


def read_truth(path: str) -> pd.Series:
    """A CSV of (task, truth): the first column is the task id, the last the true label."""
    df = pd.read_csv(path)
    if df.shape[1] < 2:
        raise SystemExit(f"error: {path} needs two columns (task, truth); got {list(df.columns)}")
    return pd.Series(df.iloc[:, -1].to_numpy(), index=df.iloc[:, 0].to_numpy(), name="truth")


def worker_accuracy(model, df: pd.DataFrame) -> pd.Series:
    """Estimated accuracy per worker: class-prior-weighted diagonal of its confusion matrix when the
    model has one, else agreement with the aggregated labels."""
    if hasattr(model, "confusion_"):
        conf = model.confusion_  # [W, true, observed]
        diag = np.einsum("wkk->wk", conf)
        prior = getattr(model, "class_prior_", None)
        weights = prior if prior is not None else np.full(conf.shape[1], 1.0 / conf.shape[1])
        return pd.Series(diag @ weights, index=model.worker_ids_, name="est_accuracy")
    return model.skills_.rename("est_accuracy")


def save_confusions(model, counts: pd.Series, out: str, n_show: int = 12) -> None:
    """A grid of the most active workers' estimated confusion matrices, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = counts.sort_values(ascending=False).index[:n_show]
    pos = model.worker_ids_.get_indexer(top)
    cols = min(4, len(top))
    rows = int(np.ceil(len(top) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, wid, p in zip(axes.flat, top, pos):
        ax.axis("on")
        im = ax.imshow(model.confusion_[p], vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"worker {wid} ({counts[wid]} labels)", fontsize=9)
        ax.set_xlabel("given label", fontsize=8)
        ax.set_ylabel("true class", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="p(given | true)")
    fig.suptitle(f"{type(model).__name__}: estimated worker confusion matrices")
    target = Path(out)
    fd, tmp = tempfile.mkstemp(suffix=target.suffix or ".png", dir=target.parent or ".")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, target)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_method(name: str, df: pd.DataFrame, threads: int | None):
    model = METHODS[name](n_threads=threads)
    t0 = time.perf_counter()
    model.fit(df)
    return model, time.perf_counter() - t0


def accuracy(labels: pd.Series, truth: pd.Series) -> tuple[float, int]:
    common = truth.index.intersection(labels.index)
    return float((labels.loc[common].to_numpy() == truth.loc[common].to_numpy()).mean()), len(common)


def demo(args: argparse.Namespace) -> int:
    print(f"luab_fast aggregation demo: synthetic crowd of {args.demo_tasks:,} tasks × {args.demo_workers} workers "
          f"× {args.demo_labels} labels/task × {args.demo_classes} classes\n(worker accuracy ~ U(0.5, 0.95), "
          "wrong answers uniform; the protocol of ../shared/docs/aggregation.md)\n")
    crowd = make_crowd(args.demo_tasks, args.demo_workers, args.demo_labels, args.demo_classes, seed=args.seed)
    df = crowd.frame()
    truth = pd.Series(crowd.truth, name="truth")
    print(f"{'method':<10} {'accuracy':>9} {'iters':>6} {'seconds':>9} {'labels/s':>12}")
    for name in args.method or ["mv", "ds", "onecoin", "bayes"]:
        model, dt = run_method(name, df, args.threads)
        acc, _ = accuracy(model.labels_, truth)
        iters = getattr(model, "n_iter_", "-")
        print(f"{name:<10} {acc:>9.4f} {iters!s:>6} {dt:>9.3f} {len(df) / dt:>12,.0f}")
    print("\nRun on your own labels: python -m luab_fast.aggregate label.csv --truth truth.csv --method ds")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m luab_fast.aggregate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels", nargs="?", help="CSV with columns task (or item), worker, label; omit for the demo")
    p.add_argument("--truth", help="CSV of (task, true label) to report accuracy")
    p.add_argument("--method", action="append", choices=sorted(METHODS),
                   help="aggregation method (repeatable; default: ds, or all in the demo)")
    p.add_argument("--out", help="write the aggregated labels and posteriors to this CSV")
    p.add_argument("--plot", metavar="PNG", help="save the most active workers' confusion matrices")
    p.add_argument("--workers", type=int, default=10, help="how many workers to list (default 10)")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="demo seed")
    p.add_argument("--demo-tasks", type=int, default=100_000)
    p.add_argument("--demo-workers", type=int, default=1000)
    p.add_argument("--demo-labels", type=int, default=5)
    p.add_argument("--demo-classes", type=int, default=100)
    args = p.parse_args(argv)

    if args.labels is None:
        return demo(args)
    df = read_labels(args.labels)
    truth = read_truth(args.truth) if args.truth else None
    counts = df["worker"].value_counts()
    print(f"{args.labels}: {df['task'].nunique():,} tasks, {len(counts):,} workers, {len(df):,} labels, "
          f"{df['label'].nunique()} classes")
    for name in args.method or ["ds"]:
        model, dt = run_method(name, df, args.threads)
        line = f"\n[{name}] {dt:.3f} s"
        if hasattr(model, "n_iter_"):
            line += f", {model.n_iter_} EM iterations"
        if truth is not None:
            acc, n = accuracy(model.labels_, truth)
            line += f", accuracy {acc:.4f} on {n:,} tasks with gold"
        print(line)
        est = worker_accuracy(model, df).to_frame().join(counts.rename("labels"))
        est = est.sort_values("labels", ascending=False).head(args.workers)
        print(f"most active workers (estimated accuracy):\n{est.to_string(float_format=lambda v: f'{v:.3f}')}")
        if args.plot and hasattr(model, "confusion_"):
            methods = args.method or ["ds"]
            target = args.plot if len(methods) == 1 else str(Path(args.plot).with_stem(f"{Path(args.plot).stem}-{name}"))
            save_confusions(model, counts, target)
            print(f"saved worker confusion matrices to {target}")
        elif args.plot:
            print(f"(no confusion matrices to plot for {name})")
        if args.out:
            out = model.probas_.copy()
            out.insert(0, "label", model.labels_)
            out.index.name = "task"
            tmp = f"{args.out}.tmp"
            out.to_csv(tmp)
            os.replace(tmp, args.out)
            print(f"wrote labels and posteriors to {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
