"""``python -m luab_fast.aggregate``: aggregate a crowd CSV, or, with no file, run the built-in demo.

    python -m luab_fast.aggregate                       # demo: synthetic crowd, every method side by side
    python -m luab_fast.aggregate label.csv --truth truth.csv --method ds --plot workers.png

Methods: mv, ds, onecoin, bayes are luab_fast.aggregate's estimators (smoothed Dawid-Skene priors by default);
wawa, zbs, glad, mace, kos (two classes only), mmsr and gold-mv (fitted on --truth's labels) are crowd-kit's
models to the letter (luab_fast.crowdkit), on the same C++ engines.

With one --method, --out writes that method's labels and posteriors (the table `python -m luab_fast.train
--labels` reads). With several, --out writes one table with a column of labels per method, and --plot one file
per method: PLOT's name with -METHOD before its suffix (workers.png -> workers-ds.png).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .. import _atomic, _cli, crowdkit
from .._cli import DataError, UsageError
from . import METHODS, BayesAggregator, DawidSkene, OneCoinDawidSkene, _checks
from .dawid_skene import one_coin_theta
from .synthetic import make_crowd

TASK_ALIASES = ("task", "item", "image", "example")
COLUMNS = "task (or item, image, example), worker, label"
DEMO_METHODS = ["mv", "ds", "onecoin", "bayes"]
# every model the command runs: luab_fast.aggregate's own, then crowd-kit's (same engines, crowd-kit's defaults)
ALL_METHODS = {**METHODS, "wawa": crowdkit.Wawa, "zbs": crowdkit.ZeroBasedSkill, "glad": crowdkit.GLAD,
               "mace": crowdkit.MACE, "kos": crowdkit.KOS, "mmsr": crowdkit.MMSR,
               "gold-mv": crowdkit.GoldMajorityVote}
NEEDS_TRUTH = {"gold-mv"}  # fitted on the gold labels themselves: its accuracy there says nothing


# -- reading -------------------------------------------------------------------------------------------------
def input_file(path: str, what: str) -> Path:
    """``path`` as an existing file, else a usage error naming ``what`` (the argument)."""
    if not path:  # Path("") is the current folder
        raise UsageError(f"{what}: expected a CSV file name, got {path!r}")
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {path} is a folder; expected a CSV file")
    if not p.exists():
        raise UsageError(f"{what} {path}: no such file; expected a CSV file")
    return p


def read_csv(path: Path, what: str, **kwargs) -> pd.DataFrame:
    """A CSV, or one DataError naming the file for what cannot be read as one."""
    try:
        # low_memory=False: chunked type inference could read one column as ints in one chunk and text in the
        # next, making task 5 and task "5" two tasks
        return pd.read_csv(path, low_memory=False, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} {path} is empty; expected a CSV with a header line") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise DataError(f"{what} {path} is not a well-formed CSV ({detail}); every row needs as many fields as "
                        "the header") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded); expected a "
                        "CSV file") from None


def _show(value) -> str:
    """A value as the user wrote it: 3, 'x' (not numpy's np.int64(3))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _rows(mask: np.ndarray) -> str:
    """'row 7' / 'rows 3, 9 (and 4 more)': 1-based data rows (the header is not a row)."""
    idx = np.flatnonzero(mask) + 1
    if idx.size == 1:
        return f"row {idx[0]}"
    more = f" (and {idx.size - 5} more)" if idx.size > 5 else ""
    return f"rows {', '.join(map(str, idx[:5]))}{more}"


def read_labels(path) -> pd.DataFrame:
    """A CSV of (task, worker, label); an ``item``/``image``/``example`` column is taken as the task id."""
    df = read_csv(Path(path), "labels")
    shown = {"task": "task", "worker": "worker", "label": "label"}  # column names as the file has them
    if "task" not in df.columns:
        alias = next((c for c in TASK_ALIASES if c in df.columns), None)
        if alias is not None:
            df = df.rename(columns={alias: "task"})
            shown["task"] = alias
    missing = [c for c in ("task", "worker", "label") if c not in df.columns]
    if missing:
        raise DataError(f"labels {path} needs columns {COLUMNS}; got {', '.join(map(str, df.columns))}")
    if len(df) == 0:
        raise DataError(f"labels {path} has a header but no rows; expected one row per (task, worker, label)")
    for col in ("task", "worker", "label"):
        empty = df[col].isna().to_numpy()
        if empty.any():
            raise DataError(f"labels {path}: {_rows(empty)} {'has' if empty.sum() == 1 else 'have'} no {shown[col]} "
                            "(an empty cell); every row needs a task, a worker and a label")
    return df


def _like(values: pd.Series, like: pd.Series, what: str, path: Path, source: Path) -> pd.Series:
    """``values`` (text) in the type the crowd CSV gave its own column, so that 3 and "3" are one label, and
    text where the crowd has numbers is named rather than counted as a wrong answer."""
    empty = values.isna().to_numpy()
    if empty.any():
        raise DataError(f"--truth {path}: {_rows(empty)} {'has' if empty.sum() == 1 else 'have'} no {what} "
                        "(an empty cell)")
    if pd.api.types.is_bool_dtype(like):
        conv = values.str.strip().str.lower().map({"true": True, "false": False})
        kind = "True or False"
    elif pd.api.types.is_numeric_dtype(like):
        conv = pd.to_numeric(values, errors="coerce")
        kind = "a number"
    else:
        return values
    bad = conv.isna().to_numpy()
    if bad.any():
        first = values.iat[int(np.flatnonzero(bad)[0])]
        raise DataError(f"--truth {path}: {_rows(bad)} {'has' if bad.sum() == 1 else 'have'} {what} {_show(first)}"
                        f"{' and others' if bad.sum() > 1 else ''}; expected {kind}, as the {what}s of {source} "
                        f"are (e.g. {_show(like.iat[0])})")
    return conv


def read_truth(path, crowd: pd.DataFrame, source) -> pd.Series:
    """A CSV of (task, truth): the first column is the task id, the last the true label, both read in the
    crowd's types; one truth per task; at least one task in common with the crowd."""
    path, source = Path(path), Path(source)
    df = read_csv(path, "--truth", dtype=str)  # as text: converted to the crowd's types below, row by row
    if df.shape[1] < 2:
        raise DataError(f"--truth {path} needs two columns (task, truth); got {', '.join(map(str, df.columns))}")
    if len(df) == 0:
        raise DataError(f"--truth {path} has a header but no rows; expected one row per task")
    task = _like(df.iloc[:, 0], crowd["task"], "task", path, source)
    label = _like(df.iloc[:, -1], crowd["label"], "label", path, source)
    truth = pd.Series(label.to_numpy(), index=pd.Index(task.to_numpy()), name="truth")
    pairs = pd.DataFrame({"task": truth.index, "truth": truth.to_numpy()}).drop_duplicates()
    clash = pairs["task"].duplicated(keep=False).to_numpy()
    if clash.any():
        t = pairs["task"].to_numpy()[clash][0]
        rows = _rows((truth.index == t))
        raise DataError(f"--truth {path}: task {_show(t)} has different truths ({rows}); give one truth per task")
    truth = truth[~truth.index.duplicated()]
    crowd_tasks = pd.Index(crowd["task"].unique())
    if not truth.index.isin(crowd_tasks).any():
        raise DataError(f"--truth {path}: none of its {len(truth):,} tasks is a task of {source} (e.g. "
                        f"{_show(truth.index[0])} there, {_show(crowd_tasks[0])} here); its first column must hold "
                        "the same task ids")
    crowd_labels = pd.Index(crowd["label"].unique())
    if not pd.Index(truth.to_numpy()).isin(crowd_labels).any():  # e.g. class names against class indices
        raise DataError(f"--truth {path}: none of its labels is a label of {source} (e.g. {_show(truth.iat[0])} "
                        f"there, {_show(crowd_labels[0])} here); its last column must hold the same labels")
    return truth


# -- reporting -----------------------------------------------------------------------------------------------
def worker_confusions(model, positions: np.ndarray) -> np.ndarray:
    """[len(positions), true, observed] of some workers; a one-coin model's from its skills, never all W × K²."""
    if isinstance(model, OneCoinDawidSkene):
        return one_coin_theta(model.skills_.to_numpy()[positions], model.posteriors_.shape[1])
    return model.confusion_[positions]


def worker_accuracy(model, df: pd.DataFrame) -> pd.Series:
    """Estimated accuracy per worker: class-prior-weighted diagonal of its confusion matrix when the
    model has one (a one-coin model's diagonal is its clipped skill), else agreement with the aggregated
    labels."""
    if isinstance(model, OneCoinDawidSkene):
        skills = model.skills_
        K = model.posteriors_.shape[1]
        acc = np.clip(skills.to_numpy(), 1e-10, 1 - 1e-10) if K > 1 else np.ones(len(skills))
        return pd.Series(acc, index=model.worker_ids_, name="est_accuracy")
    if isinstance(model, (DawidSkene, BayesAggregator)):
        conf = model.confusion_  # [W, true, observed]
        diag = np.einsum("wkk->wk", conf)
        prior = getattr(model, "class_prior_", None)
        weights = prior if prior is not None else np.full(conf.shape[1], 1.0 / conf.shape[1])
        return pd.Series(diag @ weights, index=model.worker_ids_, name="est_accuracy")
    if hasattr(model, "skills_") and not isinstance(model, crowdkit.MMSR):  # MMSR's skills are not accuracies
        return model.skills_.rename("est_accuracy")
    return agreement(df, model.labels_)


def agreement(df: pd.DataFrame, labels: pd.Series) -> pd.Series:
    """Each worker's share of labels equal to the aggregate: the accuracy estimate of a model without one."""
    agg = labels.reindex(df["task"]).to_numpy()
    hit = pd.Series(agg == df["label"].to_numpy(), index=df["worker"].to_numpy())
    return hit.groupby(level=0).mean().rename("est_accuracy")


def write_file(what: str, target: Path, write: Callable[[], object]) -> None:
    """Runs an atomic ``write`` of ``target``; an OSError (full disk, no permission) becomes one message naming
    the argument and the destination, not the temporary it was writing."""
    try:
        write()
    except OSError as exc:
        named = OSError(exc.errno, exc.strerror or str(exc), str(target))
        raise DataError(f"{what}: {_cli.message_and_status(named)[0]}") from None


def save_confusions(model, counts: pd.Series, out, n_show: int = 12) -> None:
    """A grid of the most active workers' estimated confusion matrices, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = counts.sort_values(ascending=False).index[:n_show]
    pos = model.worker_ids_.get_indexer(top)
    conf = worker_confusions(model, pos)
    cols = min(4, len(top))
    rows = int(np.ceil(len(top) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    try:
        for ax in axes.flat:
            ax.axis("off")
        for ax, wid, c in zip(axes.flat, top, conf):
            ax.axis("on")
            im = ax.imshow(c, vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"worker {wid} ({counts[wid]} labels)", fontsize=9)
            ax.set_xlabel("given label", fontsize=8)
            ax.set_ylabel("true class", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="p(given | true)")
        fig.suptitle(f"{type(model).__name__}: estimated worker confusion matrices")
        write_file("--plot", Path(out), lambda: _atomic.save_figure(fig, out, dpi=110))
    finally:
        plt.close(fig)


def label_table(fitted: dict) -> pd.DataFrame:
    """One method: its label and posteriors (columns label, then one per class); several: one column of labels
    per method (a model without posteriors, KOS or MMSR, gives its label alone)."""
    if len(fitted) == 1:
        model = next(iter(fitted.values()))
        probas = getattr(model, "probas_", None)
        table = probas.copy() if probas is not None else pd.DataFrame(index=model.labels_.index)
        table.insert(0, "label", model.labels_.reindex(table.index))
    else:
        table = pd.concat({name: model.labels_ for name, model in fitted.items()}, axis=1)
    table.index.name = "task"
    return table


def write_labels(table: pd.DataFrame, out: Path) -> None:
    def write() -> None:
        with _atomic.atomic_path(out) as tmp:
            table.to_csv(tmp)

    write_file("--out", out, write)


def run_method(name: str, df: pd.DataFrame, threads: int | None, source=None, truth: pd.Series | None = None):
    """Fits method ``name``; with ``source`` (the labels file) a refusal of the data names that file."""
    model = ALL_METHODS[name](n_threads=threads)
    t0 = time.perf_counter()
    try:
        # fit_predict, not fit: crowd-kit's Wawa, ZeroBasedSkill and GoldMajorityVote set labels_ only there
        if name in NEEDS_TRUTH:
            model.fit_predict(df, truth)
        else:
            model.fit_predict(df)
    except ValueError as exc:
        if source is None:
            raise
        raise DataError(f"labels {source}: {exc}") from None  # every argument was checked: it is the data
    return model, time.perf_counter() - t0


def accuracy(labels: pd.Series, truth: pd.Series) -> tuple[float, int]:
    common = truth.index.intersection(labels.index)
    return float((labels.loc[common].to_numpy() == truth.loc[common].to_numpy()).mean()), len(common)


# -- arguments -----------------------------------------------------------------------------------------------
def int_arg(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi], else argparse's usage error with what was expected."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            want = f"an integer {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m luab_fast.aggregate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("labels", nargs="?", help=f"CSV with columns {COLUMNS}; omit for the demo")
    p.add_argument("--truth", help="CSV of (task, true label) to report accuracy")
    p.add_argument("--method", action="append", choices=list(ALL_METHODS),
                   help="aggregation method (repeatable; default: ds, or mv, ds, onecoin, bayes in the demo)")
    p.add_argument("--out", help="write the aggregated labels and posteriors to this CSV (several methods: one "
                                 "column of labels each)")
    p.add_argument("--plot", metavar="PNG", help="save the most active workers' confusion matrices")
    p.add_argument("--workers", type=int_arg(0), default=10, help="how many workers to list (default 10)")
    p.add_argument("--threads", type=int_arg(1, _checks.MAX_THREADS), default=None,
                   help="OpenMP threads (default: all cores)")
    p.add_argument("--seed", type=int_arg(0), default=0, help="demo seed")
    p.add_argument("--demo-tasks", type=int_arg(1), default=100_000)
    p.add_argument("--demo-workers", type=int_arg(1), default=1000)
    p.add_argument("--demo-labels", type=int_arg(1), default=5)
    p.add_argument("--demo-classes", type=int_arg(2, _checks.MAX_CLASSES), default=100)
    return p


def per_method(path: str | None, what: str, methods: list[str]) -> dict[str, Path]:
    """The file each method writes for ``--out``/``--plot``: the path itself for one method, else the path
    with -METHOD before its suffix, so that no method's result replaces another's."""
    if path is None:
        return {}
    base = _atomic.check_destination(path, what)
    if len(methods) == 1:
        return {methods[0]: base}
    return {m: base.with_name(f"{base.stem}-{m}{base.suffix}") for m in methods}


def check_plot_format(path: Path) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    ext = path.suffix.lstrip(".").lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in known:
        raise UsageError(f"--plot {path}: expected a file name ending in an image format ("
                         f"{', '.join('.' + k for k in sorted(known))}), got {path.suffix!r}")


def check_distinct(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """No output replaces an input or another output (``--out labels.csv`` would replace the crowd's labels)."""
    seen: dict[str, str] = {}
    for what, path in inputs.items():
        seen[os.path.realpath(path)] = what
    for what, path in outputs.items():
        key = os.path.realpath(path)
        if key in seen:
            raise UsageError(f"{what} {path} is also {seen[key]}; choose another file name")
        seen[key] = what


def check_demo_size(args: argparse.Namespace) -> None:
    if args.demo_labels > args.demo_workers:
        raise UsageError(f"--demo-labels: expected at most --demo-workers={args.demo_workers} (each task's "
                         f"labels come from distinct workers), got {args.demo_labels}")
    n = args.demo_tasks * args.demo_labels
    _checks.check_fits(8 * (6 * n + 3 * args.demo_workers + 2 * args.demo_tasks * args.demo_classes),
                       f"a demo crowd of --demo-tasks {args.demo_tasks:,} × --demo-labels {args.demo_labels:,}",
                       "ask for a smaller demo")


# -- the two modes -------------------------------------------------------------------------------------------
def demo(args: argparse.Namespace, methods: list[str] | None = None) -> int:
    check_demo_size(args)
    print(f"luab_fast aggregation demo: synthetic crowd of {args.demo_tasks:,} tasks × {args.demo_workers} workers "
          f"× {args.demo_labels} labels/task × {args.demo_classes} classes\n(worker accuracy ~ U(0.5, 0.95), "
          "wrong answers uniform; the protocol of ../shared/docs/aggregation.md)\n")
    crowd = make_crowd(args.demo_tasks, args.demo_workers, args.demo_labels, args.demo_classes, seed=args.seed)
    df = crowd.frame()
    truth = pd.Series(crowd.truth, name="truth")
    print(f"{'method':<10} {'accuracy':>9} {'iters':>6} {'seconds':>9} {'labels/s':>12}")
    for name in methods or DEMO_METHODS:
        model, dt = run_method(name, df, args.threads)
        acc, _ = accuracy(model.labels_, truth)
        iters = getattr(model, "n_iter_", "-")
        print(f"{name:<10} {acc:>9.4f} {iters!s:>6} {dt:>9.3f} {len(df) / dt:>12,.0f}")
    print("\nRun on your own labels: python -m luab_fast.aggregate label.csv --truth truth.csv --method ds")
    return 0


def aggregate(args: argparse.Namespace, methods: list[str]) -> int:
    source = input_file(args.labels, "labels")
    truth_path = input_file(args.truth, "--truth") if args.truth is not None else None
    if NEEDS_TRUTH.intersection(methods) and truth_path is None:
        raise UsageError(f"--method {', '.join(sorted(NEEDS_TRUTH.intersection(methods)))} is fitted on gold labels: "
                         "give them with --truth")
    out = _atomic.check_destination(args.out, "--out") if args.out is not None else None
    plots = per_method(args.plot, "--plot", methods)
    plots = {m: p for m, p in plots.items() if issubclass(ALL_METHODS[m], (DawidSkene, BayesAggregator))}
    if plots:
        check_plot_format(next(iter(plots.values())))
    inputs = {"the labels file": source, **({"the --truth file": truth_path} if truth_path else {})}
    check_distinct(inputs, {**({"--out": out} if out is not None else {}),
                            **{f"--plot ({m})": p for m, p in plots.items()}})

    df = read_labels(source)
    truth = read_truth(truth_path, df, source) if truth_path else None
    counts = df["worker"].value_counts()
    print(f"{args.labels}: {df['task'].nunique():,} tasks, {len(counts):,} workers, {len(df):,} labels, "
          f"{df['label'].nunique()} classes")
    # every method is fitted before anything is written: a refused fit leaves no partial set of outputs
    fitted = {name: run_method(name, df, args.threads, source, truth) for name in methods}
    for name, (model, dt) in fitted.items():
        line = f"\n[{name}] {dt:.3f} s"
        if hasattr(model, "n_iter_"):
            line += f", {model.n_iter_} EM iterations"
        if truth is not None:
            acc, n = accuracy(model.labels_, truth)
            line += f", accuracy {acc:.4f} on {n:,} tasks with gold"
            if name in NEEDS_TRUTH:
                line += " (the gold it was fitted on)"
        print(line)
        est = worker_accuracy(model, df).to_frame().join(counts.rename("labels"))
        est = est.sort_values("labels", ascending=False).head(args.workers)
        print(f"most active workers (estimated accuracy):\n{est.to_string(float_format=lambda v: f'{v:.3f}')}")
        if name in plots:
            save_confusions(model, counts, plots[name])
            print(f"saved worker confusion matrices to {plots[name]}")
        elif args.plot:
            print(f"(no confusion matrices to plot for {name})")
    if out is not None:
        write_labels(label_table({name: model for name, (model, _) in fitted.items()}), out)
        what = "labels and posteriors" if len(fitted) == 1 else f"the labels of {', '.join(fitted)} (a column each)"
        print(f"\nwrote {what} to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    methods = list(dict.fromkeys(args.method or []))  # a method asked twice runs once
    if args.labels is None:
        flags = {"--truth": args.truth, "--out": args.out, "--plot": args.plot}
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} a labels CSV: the demo (no "
                             "labels file given) compares with its own truth and writes nothing")
        return demo(args, methods)
    return aggregate(args, methods or ["ds"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_cli.run(main))
