"""``python -m luab_fast.annotate next|status --project DIR``: rounds of a real labelling project (project.py).

The first ``next`` creates the project from ``--tasks`` (one task id a row), their ``--features`` (.npy, row i =
task i; or ``--images DIR --model NAME``: timm features, cached in the project), ``--classes N`` or
``--class-names FILE``, ``--method`` and the loop's settings, and writes the first ``next.csv``. Each later ``next
--labels FILE ...`` ingests the labels that came back and writes the next round. Creation options given again
must match the saved ones (or be left out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .._cli import DataError, UsageError
from .loop import METHODS
from .project import CURRENT, OUTPUTS, PROJECT_FILE, Project, Settings
from .project_io import FORMATS, digest, read_answers, read_ids
from .samplers import MAX_PER_TASK, MAX_PER_WORKER

# creation options: (flag, Settings field); None = "not given" so a later call can tell what it repeats
_SETTINGS = (("--method", "method"), ("--prior-strength", "prior_strength"), ("--risk-threshold", "risk_threshold"),
             ("--max-per-image", "max_per_task"), ("--max-per-worker", "max_per_worker"), ("--hit-size", "hit_size"),
             ("--workers", "workers"), ("--epochs", "epochs"), ("--learner-risk", "learner_risk"), ("--seed", "seed"),
             ("--learner-start", "learner_start"), ("--warm-epochs", "warm_epochs"))
_OWN = {PROJECT_FILE, "tasks.csv", "features.npy", "features.json"}  # an interrupted creation's files


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m luab_fast.annotate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    nxt = sub.add_parser("next", help="ingest the labels that came back; write the tasks to send next")
    nxt.add_argument("--project", required=True, help="the project folder (created by the first call)")
    nxt.add_argument("--labels", nargs="+", default=[], metavar="FILE",
                     help="exports of the labels that came back: task,worker,label CSV, MTurk batch results CSV "
                          "or Toloka results TSV")
    nxt.add_argument("--format", default="auto", choices=FORMATS, help="layout of --labels (default: from the header)")
    nxt.add_argument("--task-column", help="--labels column holding the task id")
    nxt.add_argument("--worker-column", help="--labels column holding the worker id")
    nxt.add_argument("--label-column", help="--labels column holding the label")
    nxt.add_argument("--batch", type=int, help="tasks to send next, in whole HITs (default: the last round's; "
                                               "400 at creation)")
    new = nxt.add_argument_group("creation (first call only; saved in the project)")
    new.add_argument("--tasks", help="CSV/text file, one task id a row (the images to label)")
    new.add_argument("--features", help=".npy [N tasks, D]: row i = the i-th task")
    new.add_argument("--images", help="folder of the tasks' images (<task id>.<ext>): features from --model")
    new.add_argument("--model", help="timm model name for --images (features: its pooled output)")
    new.add_argument("--pretrained-path", help="--model weights file (default: timm's pretrained weights)")
    new.add_argument("--classes", type=int, help="number of classes (labels are 0..N-1)")
    new.add_argument("--class-names", help="file, one class name a row (labels may be names or indices)")
    new.add_argument("--gold", help="CSV task,label of known-clean tasks (~10 a class) validating the learner")
    new.add_argument("--method", choices=sorted(METHODS))
    new.add_argument("--prior-strength", type=float, help="worker prior pseudo-count strength (default 10)")
    new.add_argument("--risk-threshold", type=float, help="a task is done once 1 - max posterior is below (0.1)")
    new.add_argument("--max-per-image", type=int, help=f"labels per image at most (default {MAX_PER_TASK})")
    new.add_argument("--max-per-worker", type=int, help=f"labels per worker at most (default {MAX_PER_WORKER})")
    new.add_argument("--hit-size", type=int, help="tasks per HIT, one worker each (default 40)")
    new.add_argument("--workers", type=int, help="most distinct workers taken (default 100)")
    new.add_argument("--epochs", type=int, help="learner epochs of a fresh (cold) learner (default 50)")
    new.add_argument("--learner-start", choices=("warm", "cold"),
                     help="each round's learner starts from the last round's (warm, the default: up to "
                          "--warm-epochs epochs) or afresh (cold: up to --epochs, as the seed and the simulation)")
    new.add_argument("--warm-epochs", type=int, help="learner epochs of a warm-started round (default 20)")
    new.add_argument("--learner-risk", type=float, help="efficient_annotation: risk under which a task's posterior "
                                                        "trains the learner too (default 0.1)")
    new.add_argument("--seed", type=int, help="random seed (default 0)")
    st = sub.add_parser("status", help="print where a project stands")
    st.add_argument("--project", required=True)
    return p


def is_project(root: Path) -> bool:
    return (root / PROJECT_FILE).is_file() and (root / CURRENT).is_file()


def _creation_inputs(args) -> dict:
    """sha256 of each creation file given: a later call passing them again must pass the same files."""
    return {k: digest(Path(v)) for k, v in (("tasks", args.tasks), ("features", args.features),
                                            ("class_names", args.class_names), ("gold", args.gold)) if v}


def _check_repeat(proj: Project, args) -> None:
    for flag, name in _SETTINGS:
        given = getattr(args, flag[2:].replace("-", "_"))
        if given is not None and given != getattr(proj.settings, name):
            raise UsageError(f"{flag} {given}: the project was created with {getattr(proj.settings, name)!r}; "
                             f"settings are fixed at creation (leave {flag} out, or start a new --project)")
    for key, dig in _creation_inputs(args).items():
        if proj.sources.get(key) != dig:
            raise UsageError(f"--{key.replace('_', '-')} {getattr(args, key)}: not the file the project was "
                             "created from; leave it out (the project keeps its own copy)")
    if args.classes is not None and args.classes != proj.settings.n_classes:
        raise UsageError(f"--classes {args.classes}: the project has {proj.settings.n_classes}")
    if args.images or args.model or args.pretrained_path:  # the features were made once, at creation
        try:
            made_by = json.loads((proj.root / "features.json").read_text())
        except (OSError, ValueError):
            made_by = {}
        if made_by.get("model") != args.model or made_by.get("pretrained_path") != args.pretrained_path:
            raise UsageError(f"--images/--model/--pretrained-path: the project's features were made "
                             f"{'by ' + str(made_by.get('model')) if made_by else 'from --features'}; leave them out")


def _create(root: Path, args) -> Project:
    if root.exists() and not root.is_dir():
        raise UsageError(f"--project {root} is a file; expected a folder")
    if root.is_dir():  # an interrupted creation left our files (marked by the project file or the features')
        ours = (root / PROJECT_FILE).is_file() or (root / "features.json").is_file()
        others = [p.name for p in root.iterdir() if not p.name.startswith(".") and not (ours and (
            p.name in _OWN or p.name in OUTPUTS or p.name == CURRENT or p.name.startswith("round-")))]
        if others:
            raise UsageError(f"--project {root} holds other files ({', '.join(sorted(others)[:5])}) and is not a "
                             "labelling project; give an empty or new folder")
    if not args.tasks:
        raise UsageError(f"--project {root} is not a project yet: the first call needs --tasks, --features (or "
                         "--images and --model), --classes or --class-names, and --method")
    if args.method is None:
        raise UsageError(f"--method: the first call needs one of {', '.join(sorted(METHODS))}")
    if (args.classes is None) == (args.class_names is None):
        raise UsageError("give exactly one of --classes N and --class-names FILE")
    if args.labels:
        raise UsageError("--labels: the first call creates the project and writes the first next.csv; pass the "
                         "labels that come back for it to the next call")
    tasks = read_ids(args.tasks, "task id", "--tasks")
    names = read_ids(args.class_names, "class name", "--class-names") if args.class_names else None
    n_classes = len(names) if names else args.classes
    if n_classes is None or n_classes < 2:
        raise UsageError(f"--classes: expected at least 2 classes, got {n_classes}")
    feats = _features(args, tasks, root)
    gold = None
    if args.gold:
        try:
            gold = pd.read_csv(args.gold, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DataError(f"--gold {args.gold}: not a readable CSV task,label ({str(e)[:200]})") from None
    given = {name: getattr(args, flag[2:].replace("-", "_")) for flag, name in _SETTINGS}
    settings = Settings(n_classes=n_classes, class_names=names, **{k: v for k, v in given.items() if v is not None})
    batch = 400 if args.batch is None else args.batch
    root.mkdir(parents=True, exist_ok=True)
    return Project.create(root, tasks, feats, settings, gold, batch, _creation_inputs(args))


def _features(args, tasks: list[str], root: Path) -> Optional[np.ndarray]:
    from .cli import check_features, load_npy

    if args.features and args.images:
        raise UsageError("give one of --features and --images, not both")
    if args.images:
        if not args.model:
            raise UsageError("--images needs --model (a timm model name)")
        from .project_features import extract_features

        return extract_features(Path(args.images), tasks, args.model, args.pretrained_path, root)
    if args.model or args.pretrained_path:
        raise UsageError("--model and --pretrained-path go with --images")
    if not args.features:
        return None
    feats = check_features(load_npy(args.features, "--features"), args.features)
    if feats.shape[0] != len(tasks):
        raise DataError(f"--features {args.features} has {feats.shape[0]} rows but --tasks {args.tasks} lists "
                        f"{len(tasks)} tasks; expected one row per task, in the tasks file's order")
    return feats


def main(argv: Optional[list[str]] = None) -> int:
    from .project_report import summary, write_outputs

    args = parser().parse_args(argv)
    root = Path(args.project)
    if args.command == "status":
        if not is_project(root):
            raise UsageError(f"--project {root}: not a labelling project (no {PROJECT_FILE} and {CURRENT}); create "
                             "one with `python -m luab_fast.annotate next --project DIR --tasks ...`")
        proj = Project.load(root)
        print(summary(proj))
        cols = ["round", "labels", "new_labels", "labels_per_image", "done_fraction", "estimated_accuracy", "next"]
        print(pd.DataFrame(proj.state.history)[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        return 0
    if args.batch is not None and args.batch < 1:
        raise UsageError(f"--batch: expected a positive number of tasks, got {args.batch}")
    if not is_project(root):
        proj = _create(root, args)
        with _locked(root):
            proj.save(write_outputs)
        print(summary(proj))
        return 0
    with _locked(root):
        return _next_round(root, args, summary, write_outputs)


@contextlib.contextmanager
def _locked(root: Path):
    """One ``next`` at a time on a project: two at once would both write round r + 1."""
    import fcntl

    with open(root / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"--project {root}: another `next` is running on it; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _next_round(root: Path, args, summary, write_outputs) -> int:
    proj = Project.load(root)
    _check_repeat(proj, args)
    exports = [read_answers(f, args.format, args.task_column, args.worker_column, args.label_column)
               for f in args.labels]  # every file read and checked before the state changes
    changed = proj.advance(exports, proj.state.batch if args.batch is None else args.batch)
    if changed:
        proj.save(write_outputs)
    else:
        proj.publish()  # the current round's outputs again (also completes a save interrupted after CURRENT)
    print(summary(proj, repeated=not changed))
    return 0
