"""``python -m luab_fast.annotate``: the online labelling simulation, several methods side by side.

With no data argument it runs on the built-in demo (features: the demo images' pixels, 16×16 grey levels,
standardised; its 10 classes stand for 10 ImageNet100 classes — by default 10 of the Dog group, the seed's
hardest split — so the simulated workers' confusions are the real structured ones); ``--synthetic
imagenet100`` runs at the seed's ImageNet-100 size on Gaussian-cluster features instead. Writes ``curve.csv``, ``curve.png`` (accuracy vs labels
per image) and per method ``labels_<method>.csv`` (task, label) + ``posteriors_<method>.csv`` — the formats
``python -m luab_fast.train --labels`` takes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .loop import METHODS, run_method
from .samplers import GreedySampler, RandomSampler
from .synthetic import IMAGENET100, synthetic_problem
from .workers import SimulatedWorkers, load_amt, pooled_counts, structured_workers, uniform_workers


def demo_problem(size: str, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(features [N, 256] float32, truth [N] int64, task ids) from the demo's train split."""
    from PIL import Image

    from ..data import ensure_demo
    from ..data.source import list_images

    images = list_images(ensure_demo(seed=0, size=size).train)
    feats = np.stack([np.asarray(Image.open(f).convert("L").resize((16, 16), Image.BILINEAR), np.float32).ravel()
                      for f in images.files])
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    return feats, images.labels, images.stems


def parse_synthetic(spec: str) -> dict[str, int]:
    """``imagenet100`` or ``N:K`` → synthetic_problem's sizes."""
    if spec == "imagenet100":
        return dict(IMAGENET100)
    try:
        n, k = (int(v) for v in spec.split(":"))
    except ValueError:
        raise ValueError(f"--synthetic must be imagenet100 or N:K (two integers), got {spec!r}") from None
    return {"n_images": n, "n_classes": k}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m luab_fast.annotate", description=__doc__.split("\n\n")[0])
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
    p.add_argument("--exploration", type=float, default=0.0, help="greedy: chance of a random valid worker")
    p.add_argument("--budget", type=float, default=2.0, help="label budget, in labels per image")
    p.add_argument("--workers", type=int, default=50, help="simulated workers")
    p.add_argument("--hit-size", type=int, default=40)
    p.add_argument("--hits-per-step", type=int, default=10)
    p.add_argument("--epochs", type=int, default=50, help="learner epochs per step")
    p.add_argument("--early-stop", action="store_true", help="the seed's early stopping")
    p.add_argument("--em-start", default="warm", choices=("warm", "cold"),
                   help="warm: each step's EM starts from the previous posteriors; cold: from the prior, as the seed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/annotate")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    from tqdm import tqdm

    from ..aggregate.bayes import homogeneous_prior
    from .learner import LearnerConfig

    args = parser().parse_args(argv)
    try:
        if (args.features is None) != (args.truth is None):
            raise ValueError("--features and --truth go together")
        if sum(map(bool, (args.features, args.synthetic, args.demo))) > 1:
            raise ValueError("give one of --features/--truth, --synthetic and --demo")
        if args.synthetic:
            feats, truth = synthetic_problem(**parse_synthetic(args.synthetic), separability=args.separability,
                                             seed=args.seed)
            ids = [str(i) for i in range(len(truth))]
        elif args.features:
            feats = np.load(args.features).astype(np.float32)
            truth = np.load(args.truth).astype(np.int64)
            if feats.ndim != 2 or truth.shape != (feats.shape[0],):
                raise ValueError(f"--features must be [N, D] and --truth [N], got {feats.shape} and {truth.shape}")
            ids = [str(i) for i in range(len(truth))]
        else:
            feats, truth, ids = demo_problem(args.demo_size, args.seed)
        K = int(truth.max()) + 1
        amt = load_amt()
        if K > len(amt.wnids):
            raise ValueError(f"--truth has {K} classes; the AMT workers cover {len(amt.wnids)}")
        if args.classes == "fine" and K <= len(amt.groups[0]):
            classes = list(amt.groups[0][:K])  # the Dog group: fine-grained, workers ≈ 0.44 accurate
        else:  # spread over the groups, so confusions stay structured but rarer
            per = -(-K // len(amt.groups))
            classes = [w for g in amt.groups for w in g[:per]]
            classes = (classes + [w for w in amt.wnids if w not in classes])[:K]  # groups smaller than per
        make = structured_workers if args.simulation == "structured" else uniform_workers
        workers = SimulatedWorkers(make(amt, classes, n_workers=args.workers, seed=args.seed))
        alpha = homogeneous_prior(pooled_counts(amt, classes), 10.0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    N = len(truth)
    print(f"{N:,} images, {K} classes, {args.workers} {args.simulation}-noise workers "
          f"(mean accuracy {workers.accuracy.mean():.3f}), budget {args.budget} labels/image")
    rows = []
    for name in args.method:
        kw = dict(hit_size=args.hit_size, n_hits_per_step=min(args.hits_per_step, args.workers))
        sampler = GreedySampler(N, args.workers, exploration=args.exploration, **kw) if args.sampler == "greedy" \
            else RandomSampler(N, args.workers, **kw)
        bar = tqdm(desc=name, unit="step", dynamic_ncols=True)

        def on_step(rec, bar=bar):
            bar.update(1)
            bar.set_postfix(labels_per_image=f"{rec.labels_per_image:.2f}", accuracy=f"{rec.accuracy:.3f}",
                            done=f"{rec.done_fraction:.2f}")

        res = run_method(name, feats, truth, workers, sampler, alpha, int(args.budget * N), seed=args.seed,
                         learner_config=LearnerConfig(max_epochs=args.epochs), early_stop=args.early_stop,
                         em_start=args.em_start, on_step=on_step)
        bar.close()
        rows += [vars(r) for r in res["curve"]]
        post = res["posteriors"]
        _write_csv(pd.DataFrame({"task": ids, "label": post.argmax(1)}), out / f"labels_{name}.csv")
        cols = [str(k) for k in range(K)]
        _write_csv(pd.DataFrame(post, columns=cols).assign(task=ids)[["task"] + cols], out / f"posteriors_{name}.csv")
    curve = pd.DataFrame(rows)
    _write_csv(curve.drop(columns=["seconds_em"]), out / "curve.csv")
    _plot(curve, out / "curve.png")
    final = curve.groupby("method").last()
    print("\n| method | labels/image | accuracy | done |\n|---|---|---|---|")
    for name, r in final.iterrows():
        print(f"| {name} | {r['labels_per_image']:.3f} | {r['accuracy']:.3f} | {r['done_fraction']:.3f} |")
    print(f"\nEM refit: median {1e3 * curve['seconds_em'].median():.1f} ms per step; results in {out}")
    return 0


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Atomically: a killed run leaves the previous file or none, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, float_format="%.7g")  # 1e-7 is below any risk threshold; halves the text
    tmp.replace(path)


def _plot(curve: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
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
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    plt.close(fig)
