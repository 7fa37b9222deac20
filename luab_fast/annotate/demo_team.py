"""A simulated labelling team for trying ``python -m luab_fast.annotate next`` on the built-in demo.

``setup --out DIR`` writes what a real project starts from: ``tasks.csv`` (the demo's train images), their
``features.npy`` (the simulation's demo features), ``class_names.txt`` and ``gold.csv`` (10 known-clean images a
class, the paper's prototypes); the team's own answer key goes to ``DIR/team/truth.npy``.
``answer --setup DIR --project P --out FILE`` answers the project's ``next.csv`` as a crowd platform would: each
HIT goes to one of the simulation's structured-noise workers (``--workers``, real AMT confusions; a worker takes
one HIT a round, drawn at random), who answers from its confusion row; the answers are written as
``task,worker,label`` with class names. Seeded by ``--seed`` and the project's round, so reruns give the same file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .._atomic import atomic_path
from .._cli import DataError, UsageError


def _team(n_classes: int, n_workers: int, seed: int):
    from .workers import SimulatedWorkers, load_amt, structured_workers

    amt = load_amt()  # the demo's classes stand for the Dog group's, as in the simulation's default
    return SimulatedWorkers(structured_workers(amt, list(amt.groups[0][:n_classes]), n_workers=n_workers, seed=seed))


def setup(out: Path, size: str, seed: int) -> None:
    from ..data import ensure_demo
    from ..data.source import list_images
    from .cli import demo_problem

    feats, truth, ids = demo_problem(size, seed)
    names = list(list_images(ensure_demo(seed=0, size=size).train).classes)
    rng = np.random.default_rng(seed)
    gold = np.concatenate([rng.choice(np.flatnonzero(truth == k), size=min(10, int((truth == k).sum())),
                                      replace=False) for k in range(len(names))])
    (out / "team").mkdir(parents=True, exist_ok=True)
    files = {"tasks.csv": pd.DataFrame({"task": ids}),
             "gold.csv": pd.DataFrame({"task": np.asarray(ids)[gold], "label": np.asarray(names)[truth[gold]]})}
    for name, frame in files.items():
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_path(out / "class_names.txt") as tmp:
        tmp.write_text("\n".join(names) + "\n")
    for name, arr in (("features.npy", feats), ("team/truth.npy", truth)):
        with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    print(f"{len(ids):,} tasks, {len(names)} classes, features {feats.shape[1]}-d, {len(gold)} gold -> {out}")


def answer(setup_dir: Path, project: Path, out: Path, n_workers: int, seed: int) -> None:
    try:
        truth = np.load(setup_dir / "team" / "truth.npy", allow_pickle=False)
        ids = pd.read_csv(setup_dir / "tasks.csv", dtype=str, keep_default_na=False)["task"].tolist()
        names = (setup_dir / "class_names.txt").read_text().split()
        nxt = pd.read_csv(project / "next.csv", dtype=str, keep_default_na=False)
        rnd = int((project / "CURRENT").read_text().strip().split("-")[1])
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise DataError(f"--setup {setup_dir} / --project {project}: cannot be read ({type(e).__name__}: "
                        f"{str(e)[:200]}); expected `demo_team setup` output and a project") from None
    pos = pd.Index(ids).get_indexer(nxt["task"])
    if (pos < 0).any():
        raise DataError(f"{project / 'next.csv'} asks for tasks the setup does not have, e.g. "
                        f"{nxt['task'][pos < 0].tolist()[:3]}")
    hits = nxt["hit"].astype(int).to_numpy()
    n_hits = int(hits.max()) + 1 if hits.size else 0
    if n_hits > n_workers:
        raise UsageError(f"--workers {n_workers}: next.csv has {n_hits} HITs and a worker takes one a round")
    rng = np.random.default_rng([seed, rnd])
    who = rng.choice(n_workers, size=n_hits, replace=False)[hits] if n_hits else np.zeros(0, np.int64)
    labels = _team(len(names), n_workers, seed).label(pos, who, truth, rng)
    frame = pd.DataFrame({"task": nxt["task"], "worker": [f"worker{w:03d}" for w in who],
                          "label": np.asarray(names, dtype=object)[labels]})
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
    print(f"{len(frame):,} answers from {len(set(who.tolist()))} workers -> {out}")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m luab_fast.annotate.demo_team", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("setup", help="write the demo's tasks, features, class names and gold set")
    s.add_argument("--out", required=True)
    s.add_argument("--demo-size", default="default", choices=("default", "tiny"))
    s.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("answer", help="answer a project's next.csv")
    a.add_argument("--setup", required=True, help="the folder `setup` wrote")
    a.add_argument("--project", required=True)
    a.add_argument("--out", required=True, help="answers CSV to write")
    a.add_argument("--workers", type=int, default=50, help="simulated workers (default 50)")
    a.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.seed < 0:
        raise UsageError(f"--seed: expected an integer >= 0, got {args.seed}")
    if args.command == "setup":
        setup(Path(args.out), args.demo_size, args.seed)
    else:
        if args.workers < 1:
            raise UsageError(f"--workers: expected an integer >= 1, got {args.workers}")
        answer(Path(args.setup), Path(args.project), Path(args.out), args.workers, args.seed)
    return 0


if __name__ == "__main__":
    import sys

    from .. import _cli

    sys.exit(_cli.run(main))
