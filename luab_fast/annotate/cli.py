"""``python -m luab_fast.annotate``: the online labelling simulation, several methods side by side.

With no data argument it runs on the built-in demo (features: 64 principal components of the demo images' HOG
descriptors, which carry the class without any label — ``demo_features.py`` —, standardised; its 10 classes
stand for 10 ImageNet100 classes — by default 10 of the Dog group, the seed's hardest split — so the simulated
workers' confusions are the real structured ones); ``--synthetic imagenet100`` runs at the seed's ImageNet-100
size on Gaussian-cluster features instead. Writes ``curve.csv``, ``curve.png`` (accuracy vs labels per image)
and per method ``labels_<method>.csv`` (task, label) + ``posteriors_<method>.csv`` — the formats
``python -m luab_fast.train --labels`` takes.

Every argument is checked before any work, every input file as it is read, and nothing is written until every
method has finished: then all the outputs replace an earlier run's together (unique temporaries renamed into
place), so a failed run leaves ``--out`` as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .._atomic import atomic_path
from .._checks import physical_memory
from .._cli import DataError, UsageError
from .loop import METHODS, run_method
from .samplers import MAX_PER_TASK, MAX_PER_WORKER, GreedySampler, RandomSampler
from .synthetic import IMAGENET100, synthetic_problem
from .workers import SimulatedWorkers, load_amt, pooled_counts, structured_workers, uniform_workers

AMT_CLASSES = 100  # the shipped AMT data's classes; a custom $LUAB_FAST_AMT_DIR is checked once it is read
MAX_WORKERS = 100_000  # built one by one (the seed's RNG replayed per worker): more would take minutes
MAX_EPOCHS = 10_000  # the seed trains 100; far past this a typo would keep the learner busy for days
MAX_SEPARABILITY = 1000.0  # classes are perfectly separable long before; keeps features far from float32's range
SYNTHETIC_DIM = 64  # synthetic_problem's default feature size


def demo_problem(size: str, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features [N, 64] float32, truth [N] int64, task ids) from the demo's train split: the principal
    components of the images' HOG descriptors, rotated to equal variances (label-free, cached beside the demo:
    ``demo_features``), standardised."""
    from ..data import ensure_demo
    from ..data.source import list_images
    from .demo_features import demo_features

    demo = ensure_demo(seed=0, size=size)
    images = list_images(demo.train)
    feats = demo_features(demo.root, images.files)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    return feats, images.labels, images.stems


def parse_synthetic(spec: str) -> dict[str, int]:
    """``imagenet100`` or ``N:K`` → synthetic_problem's sizes (N >= K >= 2, K <= the AMT data's 100 classes)."""
    if spec == "imagenet100":
        return dict(IMAGENET100)
    try:
        n, k = (int(v) for v in spec.split(":"))
    except ValueError:
        raise UsageError(f"--synthetic: expected imagenet100 or N:K (two integers), got {spec!r}") from None
    if k < 2 or n < k:
        raise UsageError(f"--synthetic {spec}: expected N images >= K classes >= 2, got N={n}, K={k}")
    if k > AMT_CLASSES:
        raise UsageError(f"--synthetic {spec}: K={k} classes, but the simulated workers cover {AMT_CLASSES}; "
                         f"use K <= {AMT_CLASSES}")
    return {"n_images": n, "n_classes": k}


def _check_fits(need: float, what: str, advice: str) -> None:
    """A usage error when ``need`` bytes would not fit in this machine's memory: an absurd size fails here, at
    once, rather than as an allocation failure (or a swap storm) minutes into the run."""
    total = physical_memory()
    if total is not None and need > 0.8 * total:
        raise UsageError(f"{what} needs about {need / 2**30:,.1f} GiB of memory; this machine has "
                         f"{total / 2**30:,.1f} GiB; {advice}")


def problem_bytes(n_images: int, dim: int, n_classes: int, n_methods: int) -> float:
    """About the peak memory of a run: features (float32, float64 while generated), and [N, K] float64
    posteriors, learner probabilities and risks, a dozen at a time plus one kept per method."""
    return float(n_images) * (dim * 20 + n_classes * 8 * (12 + n_methods))


def workers_bytes(n_workers: int, n_classes: int) -> float:
    """About the peak memory of building the workers: a [W, 6 groups, K, K] float64 gather, then copies."""
    return float(n_workers) * n_classes * n_classes * 8 * 16


def _finite(name: str, value: float, lo: float, hi: float, expected: str) -> None:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise UsageError(f"{name}: expected {expected}, got {value!r}")


def check_arguments(args: argparse.Namespace) -> None:
    """Every argument, before any work or write: one usage error naming the first bad one."""
    if (args.features is None) != (args.truth is None):
        raise UsageError("--features and --truth go together: give both (features .npy [N, D], labels .npy [N])")
    if sum(map(bool, (args.features, args.synthetic, args.demo))) > 1:
        raise UsageError("give one of --features/--truth, --synthetic and --demo")
    repeated = sorted({m for m in args.method if args.method.count(m) > 1})
    if repeated:
        raise UsageError(f"--method: {', '.join(repeated)} given more than once; name each method once")
    _finite("--budget", args.budget, 0.0, MAX_PER_TASK, f"labels per image in (0, {MAX_PER_TASK}] (no image "
            f"gets more than {MAX_PER_TASK} labels)")
    if args.budget == 0:
        raise UsageError(f"--budget: expected labels per image in (0, {MAX_PER_TASK}], got 0.0")
    for name, value, lo, hi in (("--workers", args.workers, 1, MAX_WORKERS),
                                ("--hit-size", args.hit_size, 1, MAX_PER_WORKER),
                                ("--hits-per-step", args.hits_per_step, 1, None),
                                ("--epochs", args.epochs, 0, MAX_EPOCHS),
                                ("--warm-epochs", args.warm_epochs, 0, MAX_EPOCHS)):
        if value < lo or (hi is not None and value > hi):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            why = {"--hit-size": f" (a worker labels at most {MAX_PER_WORKER} images)",
                   "--workers": " (the seed simulates 50; building each takes about 0.3 ms)"}.get(name, "")
            raise UsageError(f"{name}: expected an integer {span}{why}, got {value}")
    _finite("--exploration", args.exploration, 0.0, 1.0, "a probability in [0, 1]")
    _finite("--separability", args.separability, 0.0, MAX_SEPARABILITY,
            f"a distance in noise standard deviations in [0, {MAX_SEPARABILITY:g}]")
    top = 2**32 - args.workers  # each simulated worker i draws from RandomState(seed + i), which takes < 2**32
    if not 0 <= args.seed <= top:
        raise UsageError(f"--seed: expected an integer 0..{top} (seed + workers must stay below 2**32), "
                         f"got {args.seed}")
    if args.synthetic:  # the sizes are known now; the other sources' once their data is read
        sizes = parse_synthetic(args.synthetic)
        n, k = sizes["n_images"], sizes["n_classes"]
        _check_fits(problem_bytes(n, SYNTHETIC_DIM, k, len(args.method)), f"--synthetic {args.synthetic}",
                    "use fewer images")
        _check_fits(workers_bytes(args.workers, k), f"--workers {args.workers} of {k} classes", "use fewer workers")
        check_budget(args.budget, n)
    check_out(args.out)


def check_budget(budget: float, n_images: int) -> int:
    """The label budget in labels: at least one, or the run would end before its first step."""
    labels = int(budget * n_images)
    if labels < 1:
        raise UsageError(f"--budget {budget:g} labels per image × {n_images} images is under one label; expected "
                         f"at least {1 / n_images:.3g}")
    return labels


def check_out(out: str) -> Path:
    """``--out``: a folder, or a path whose nearest existing part is a folder we can write in."""
    path = Path(out)
    if str(out) == "":
        raise UsageError("--out: expected a folder, got an empty path")
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file; expected a folder (it is created if missing)")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"--out {path}: {probe} is a file, not a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path}: no permission to write in {probe}")
    return path


def load_npy(path: str, what: str) -> np.ndarray:
    """One array from a .npy file; never a pickle (a .npy of Python objects is refused, not loaded)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{what} {p} is a folder; expected a .npy file")
    if not p.exists():
        raise DataError(f"{what} {p}: no such file")
    try:
        with open(p, "rb") as f:
            head = f.read(6)
            if head != b"\x93NUMPY":
                kind = "a .npz archive" if head.startswith(b"PK") else \
                    "not a .npy file (no numpy header; a pickle or other file is never loaded)"
                raise DataError(f"{what} {p}: {kind}; expected one array saved by numpy.save (.npy)")
            f.seek(0)
            arr = np.load(f, allow_pickle=False)
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"{what} {p}: cannot be read ({exc.strerror or exc})") from None
    except (ValueError, EOFError) as exc:
        reason = "holds Python objects (a pickle is never loaded)" if "allow_pickle" in str(exc) else str(exc)
        raise DataError(f"{what} {p}: not a readable .npy array: {reason}; expected numbers saved by "
                        f"numpy.save") from None
    return arr


def check_features(arr: np.ndarray, path: str) -> np.ndarray:
    """--features: real numbers [N, D], N, D >= 1, finite as float32 (the learner's dtype)."""
    if arr.dtype.kind not in "biuf":
        raise DataError(f"--features {path}: dtype {arr.dtype}; expected real numbers (float or int)")
    if arr.ndim != 2 or 0 in arr.shape:
        raise DataError(f"--features {path}: shape {arr.shape}; expected [N images, D features], N, D >= 1")
    with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf: reported just below
        feats = arr.astype(np.float32)
    bad = ~np.isfinite(feats).all(1)
    if bad.any():
        raise DataError(f"--features {path}: row {int(np.argmax(bad))} holds NaN, inf or a value beyond float32's "
                        f"range ({int(bad.sum())} such rows); expected finite numbers")
    return feats


def check_truth(arr: np.ndarray, path: str, n_images: int, n_classes: int) -> np.ndarray:
    """--truth: class indices [N] in 0..n_classes-1 (integers, or floats holding integers), two classes at least."""
    if arr.dtype.kind not in "biuf":
        raise DataError(f"--truth {path}: dtype {arr.dtype}; expected integer class indices")
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"--truth {path}: shape {arr.shape}; expected [N] class indices, N >= 1")
    if arr.dtype.kind == "f":
        bad = ~(np.isfinite(arr) & (arr == np.round(arr)))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"--truth {path}: entry {i} is {arr[i].item()!r}; expected integer class indices")
    low, high = arr.min(), arr.max()
    if low < 0 or high >= n_classes:
        i = int(np.argmax((arr < 0) | (arr >= n_classes)))
        raise DataError(f"--truth {path}: entry {i} is {arr[i].item()}; expected a class index 0..{n_classes - 1} "
                        f"(the simulated workers cover {n_classes} classes)")
    if high < 1:
        raise DataError(f"--truth {path}: every entry is class 0; expected at least two classes")
    if arr.size != n_images:
        raise DataError(f"--truth {path} has {arr.size} entries but --features has {n_images} rows; expected one "
                        "class index per feature row")
    return arr.astype(np.int64)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m luab_fast.annotate", description=__doc__.split("\n\n")[0],
                                epilog="`simulate` before the options is the same command. On a real labelling "
                                       "project: `python -m luab_fast.annotate next --help` and `status --help`.")
    p.add_argument("--method", nargs="+", default=sorted(METHODS), choices=sorted(METHODS),
                   help="methods to run side by side (default: all four)")
    p.add_argument("--features", help="features .npy [N, D] (with --truth)")
    p.add_argument("--truth", help="true labels .npy [N] int (with --features)")
    p.add_argument("--synthetic", metavar="imagenet100|N:K",
                   help="synthetic Gaussian-cluster features instead of the demo: the seed's ImageNet-100 size "
                        "(125,689 images, 100 classes) or N images of K classes")
    p.add_argument("--separability", type=float, default=4.0,
                   help="--synthetic: distance of each class mean from the origin, in noise standard deviations "
                        "(4.0: the learner trained on 250 clean images per class of 100 gets 83%% of held-out "
                        "images right; 3.0: 57%%; 2.5: 40%%)")
    p.add_argument("--demo", action="store_true", help="the built-in demo (the default when no data is given)")
    p.add_argument("--demo-size", default="default", choices=("default", "tiny"), help="demo size (no --features)")
    p.add_argument("--simulation", default="structured", choices=("structured", "uniform"),
                   help="worker noise built from the real AMT confusion counts")
    p.add_argument("--classes", default="fine", choices=("fine", "spread"),
                   help="which AMT classes the data's classes stand for: fine = the Dog group (the seed's hardest "
                        "split), spread = a few from every group")
    p.add_argument("--sampler", default="random", choices=("random", "greedy"))
    p.add_argument("--exploration", type=float, default=0.0, help="greedy: chance of a random valid worker, 0..1")
    p.add_argument("--budget", type=float, default=2.0,
                   help=f"label budget, in labels per image: more than 0, at most {MAX_PER_TASK} (no image gets more)")
    p.add_argument("--workers", type=int, default=50, help=f"simulated workers, 1..{MAX_WORKERS:,}")
    p.add_argument("--hit-size", type=int, default=40, help=f"images per HIT, 1..{MAX_PER_WORKER}")
    p.add_argument("--hits-per-step", type=int, default=10,
                   help="HITs per step, >= 1 (at most --workers are used: one HIT per worker per step)")
    p.add_argument("--epochs", type=int, default=50, help=f"learner epochs per step, 0..{MAX_EPOCHS:,}")
    p.add_argument("--learner-start", default="cold", choices=("warm", "cold"),
                   help="cold: a fresh learner each step, as the seed; warm: from the last step's, up to "
                        "--warm-epochs epochs (what `annotate next` projects do by default)")
    p.add_argument("--warm-epochs", type=int, default=20, help="learner epochs of a warm-started step")
    p.add_argument("--early-stop", action="store_true", help="the seed's early stopping")
    p.add_argument("--em-start", default="warm", choices=("warm", "cold"),
                   help="warm: each step's EM starts from the previous posteriors; cold: from the prior, as the seed")
    p.add_argument("--seed", type=int, default=0, help="random seed, 0..2**32 - --workers")
    p.add_argument("--out", default="runs/annotate")
    return p


def load_problem(args: argparse.Namespace, n_amt_classes: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features float32 [N, D], truth int64 [N], task ids) from the chosen source, every file checked."""
    if args.synthetic:
        feats, truth = synthetic_problem(**parse_synthetic(args.synthetic), separability=args.separability,
                                         seed=args.seed)
        return feats, truth, [str(i) for i in range(len(truth))]
    if args.features:
        feats = check_features(load_npy(args.features, "--features"), args.features)
        truth = check_truth(load_npy(args.truth, "--truth"), args.truth, feats.shape[0], n_amt_classes)
        _check_fits(problem_bytes(*feats.shape, int(truth.max()) + 1, len(args.method)), f"--features "
                    f"{args.features}", "use fewer images")
        return feats, truth, [str(i) for i in range(len(truth))]
    return demo_problem(args.demo_size, args.seed)


def main(argv: Optional[list[str]] = None) -> int:
    import sys

    from tqdm import tqdm

    from ..aggregate.bayes import homogeneous_prior
    from .learner import LearnerConfig

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["next"], ["status"]):  # a real project's rounds (project_cli.py)
        from .project_cli import main as project_main

        return project_main(argv)
    args = parser().parse_args(argv[1:] if argv[:1] == ["simulate"] else argv)
    check_arguments(args)
    amt = load_amt()
    feats, truth, ids = load_problem(args, len(amt.wnids))
    N = len(truth)
    K = int(truth.max()) + 1
    budget = check_budget(args.budget, N)
    if K > len(amt.wnids):  # the demo's classes, or a custom $LUAB_FAST_AMT_DIR with fewer
        raise DataError(f"the data has {K} classes; the AMT workers ({amt.path}) cover {len(amt.wnids)}")
    _check_fits(workers_bytes(args.workers, K), f"--workers {args.workers} of {K} classes", "use fewer workers")
    if args.classes == "fine" and K <= len(amt.groups[0]):
        classes = list(amt.groups[0][:K])  # the Dog group: fine-grained, workers ≈ 0.44 accurate
    else:  # spread over the groups, so confusions stay structured but rarer
        per = -(-K // len(amt.groups))
        classes = [w for g in amt.groups for w in g[:per]]
        classes = (classes + [w for w in amt.wnids if w not in classes])[:K]  # groups smaller than per
    make = structured_workers if args.simulation == "structured" else uniform_workers
    workers = SimulatedWorkers(make(amt, classes, n_workers=args.workers, seed=args.seed))
    alpha = homogeneous_prior(pooled_counts(amt, classes), 10.0)
    out = Path(args.out)
    targets = [out / f"{stem}_{name}.csv" for name in args.method for stem in ("labels", "posteriors")]
    for path in targets + [out / "curve.csv", out / "curve.png"]:  # a folder in the way would fail the last rename
        if path.is_dir():
            raise UsageError(f"--out {out}: {path.name} there is a folder; move it or choose another --out")
    print(f"{N:,} images, {K} classes, {args.workers} {args.simulation}-noise workers "
          f"(mean accuracy {workers.accuracy.mean():.3f}), budget {args.budget} labels/image")
    rows, tables = [], {}
    for name in args.method:
        kw = dict(hit_size=args.hit_size, n_hits_per_step=min(args.hits_per_step, args.workers))
        sampler = GreedySampler(N, args.workers, exploration=args.exploration, **kw) if args.sampler == "greedy" \
            else RandomSampler(N, args.workers, **kw)
        bar = tqdm(desc=name, unit="step", dynamic_ncols=True)

        def on_step(rec, bar=bar):
            bar.update(1)
            bar.set_postfix(labels_per_image=f"{rec.labels_per_image:.2f}", accuracy=f"{rec.accuracy:.3f}",
                            done=f"{rec.done_fraction:.2f}")

        res = run_method(name, feats, truth, workers, sampler, alpha, budget, seed=args.seed,
                         learner_config=LearnerConfig(max_epochs=args.epochs, warm_epochs=args.warm_epochs),
                         early_stop=args.early_stop, em_start=args.em_start, learner_start=args.learner_start,
                         on_step=on_step)
        bar.close()
        rows += [vars(r) for r in res["curve"]]
        post = res["posteriors"]
        cols = [str(k) for k in range(K)]
        tables[f"labels_{name}.csv"] = pd.DataFrame({"task": ids, "label": post.argmax(1)})
        tables[f"posteriors_{name}.csv"] = pd.DataFrame(post, columns=cols).assign(task=ids)[["task"] + cols]
    curve = pd.DataFrame(rows)
    tables["curve.csv"] = curve.drop(columns=["seconds_em"])
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(out, tables, curve)
    final = curve.groupby("method").last()
    print("\n| method | labels/image | accuracy | done |\n|---|---|---|---|")
    for name, r in final.iterrows():
        print(f"| {name} | {r['labels_per_image']:.3f} | {r['accuracy']:.3f} | {r['done_fraction']:.3f} |")
    print(f"\nEM refit: median {1e3 * curve['seconds_em'].median():.1f} ms per step; results in {out}")
    return 0


def write_outputs(out: Path, tables: dict[str, pd.DataFrame], curve: pd.DataFrame) -> None:
    """Every output as one group: each is written to its own unique temporary beside it, and they are renamed
    into place only once all are complete, so a failure (a full disk, a bad table) leaves an earlier run's
    files as they were, with no temporary left, instead of a mix of two runs."""
    with contextlib.ExitStack() as stack:
        for name, frame in tables.items():
            tmp = stack.enter_context(atomic_path(out / name))
            frame.to_csv(tmp, index=False, float_format="%.7g")  # 1e-7 is below any risk threshold; halves the text
        _plot(curve, stack.enter_context(atomic_path(out / "curve.png")))


def _plot(curve: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    try:
        # methods often coincide (e.g. pseudo-labelling with no task confident enough): a line style each keeps
        # every curve visible where they overlap
        styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
        for k, (name, g) in enumerate(curve.groupby("method")):
            ls, mk = styles[k % len(styles)]
            ax.plot(g["labels_per_image"], g["accuracy"], linestyle=ls, marker=mk, ms=3, lw=1.6, label=name)
        ax.set_xlabel("labels per image")
        ax.set_ylabel("accuracy of the aggregated labels")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=110)  # path is a temporary: name the format rather than guess it
    finally:
        plt.close(fig)
