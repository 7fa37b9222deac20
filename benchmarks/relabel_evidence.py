"""ReLabel on the built-in demo (issue 21's evidence): a labels-only teacher trained with ``python -m
luab_fast.train``, its label maps written by ``python -m luab_fast.relabel generate`` and packed, then students
trained on those maps (``--label-maps``; with ``--cutmix 1.0`` under ``--cutmix-relabel mix`` and ``region``)
against the labels-only baseline (and labels-only ``--cutmix 1.0``, CutMix's own baseline), on the demo's iid and
ood splits, over several seeds.

    python -m benchmarks.relabel_evidence [--seeds 0 1] [--teacher-epochs 6] [--work runs/relabel_evidence]
                                          [--out benchmarks/results] [--quick]

Every step is the command a user would type, printed, then run in its own process (``--in-process`` calls the
same command-line entry points with the same arguments in this process instead: the test's way to skip an
interpreter start per run). Every model reads the demo's images and crowd labels (Dawid-Skene aggregated) as the
default ``python -m luab_fast.train`` does, but through ``--data`` so that only the labels-only model is trained.
A rerun with the same ``--work`` reuses each step whose command is unchanged and whose inputs were not remade, and
continues a killed training from its last checkpoint (``--resume``): a stopped experiment continues. The CutMix
variants run when ``python -m luab_fast.train --help`` lists ``--cutmix-relabel``; otherwise they are reported as
not run.

Prints a markdown table and writes ``<out>/relabel-evidence[-quick]-<UTC stamp>.json`` (rewritten after each
run, so a stopped experiment leaves what it finished): per variant and seed the iid and ood top-1, their means
and the differences to the baselines; the teacher's own scores; and what its maps hold on the demo — how often
the whole-image target names the true class, against the aggregated labels, and where in the image the maps
name it (the digit's box or the background). ``--quick``: the tiny demo, one step per model, one seed (a smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import _env
from luab_fast import _atomic
from luab_fast.data.demo import DemoPaths, ensure_demo

ROOT = Path(__file__).resolve().parents[1]
MAPS = "{maps}"  # stands for the packed store in a variant's arguments
TEACHER_SEED = 100  # not a student's seed: no student starts from the teacher's initial weights


@dataclass(frozen=True)
class Variant:
    name: str  # also the run folder's prefix
    args: tuple[str, ...]
    baseline: str  # the variant it is compared with beside the labels-only one
    cutmix: bool  # needs the trainer's CutMix options


VARIANTS = (
    Variant("labels", (), "labels", False),
    Variant("relabel", ("--label-maps", MAPS), "labels", False),
    Variant("labels-cutmix", ("--cutmix", "1.0"), "labels", True),
    Variant("relabel-cutmix-mix", ("--label-maps", MAPS, "--cutmix", "1.0", "--cutmix-relabel", "mix"),
            "labels-cutmix", True),
    Variant("relabel-cutmix-region", ("--label-maps", MAPS, "--cutmix", "1.0", "--cutmix-relabel", "region"),
            "labels-cutmix", True),
)
NO_CUTMIX = "not run: --cutmix not available yet"


@dataclass(frozen=True)
class Mode:
    demo_size: str
    train_args: tuple[str, ...]  # for the teacher and every student
    map_size: int  # relabel generate --size
    seeds: tuple[int, ...]


# map side 64 px, the training crop's: ReLabel ran its 224-px-trained teacher at 475 px for a finer map, but this
# small teacher does not carry over to a zoom: on 500 train images its whole-image top-1 through relabel generate
# (the plain stride-32 timm model) was 79.0% at 64 px, 66.6% at 96 and 37.6% at 128 (the trainer's own
# stride-16 model: 83.8, 72.6, 41.4%); at 64 px the map is 2×2
FULL = Mode("default", (), 64, (0, 1))
# the smoke run: one step per model, small crops, PyTorch decoding (no DALI pipeline to build per run)
QUICK = Mode("tiny", ("--max-steps", "1", "--batch-size", "32", "--image-size", "32", "--backend", "torchvision"), 64,
             (0,))


def entry_point(module: str):
    """The ``main(argv) -> status`` that ``python -m module`` runs (the same error handling)."""
    from luab_fast import _cli

    if module == "luab_fast.train":
        from luab_fast.train.run import main

        return main
    if module == "luab_fast.relabel":
        from luab_fast.relabel.cli import main as relabel_main

        return lambda argv: _cli.run(relabel_main, argv)
    raise ValueError(f"module: expected luab_fast.train or luab_fast.relabel, got {module!r}")


def run_cli(module: str, args: list[str], in_process: bool) -> None:
    """Prints ``python -m module args`` and runs it; a failure stops the experiment, naming the command."""
    line = shlex.join(["python", "-m", module, *args])
    print(f"\n$ {line}", flush=True)
    if in_process:
        status = entry_point(module)(args)
    else:
        status = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT).returncode
    if status:  # the command has said why on stderr; a rerun with the same --work continues from here
        raise SystemExit(f"error: exit status {status} from: {line}")


def cutmix_available(in_process: bool) -> bool:
    """Whether the trainer lists --cutmix-relabel in its --help."""
    if in_process:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            entry_point("luab_fast.train")(["--help"])
        text = out.getvalue()
    else:
        text = subprocess.run([sys.executable, "-m", "luab_fast.train", "--help"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
    return "--cutmix-relabel" in text


class Steps:
    """Runs the commands, reusing one whose command is recorded as done in ``work/commands/`` unless an input it
    reads was remade in this invocation (``stale``); a training that was started with the same command and did
    not finish (killed) is run with ``--resume``."""

    def __init__(self, work: Path, in_process: bool) -> None:
        self.done = work / "commands"
        self.done.mkdir(parents=True, exist_ok=True)
        self.in_process = in_process
        self.stale = False  # set once the teacher or its maps are remade: every later step reads them

    def command(self, name: str) -> str:
        """The command step ``name`` ran as (or was reused for)."""
        return "python -m " + (self.done / f"{name}.txt").read_text()

    def run(self, name: str, module: str, args: list[str], output: Path, upstream: bool = False,
            reads: bool = True) -> bool:
        """Runs the step unless reusable; returns whether it ran. ``upstream``: later steps read its output;
        ``reads``: this step reads the upstream steps' outputs (a labels-only student does not)."""
        stale = self.stale and reads
        marker, started = self.done / f"{name}.txt", self.done / f"{name}.started.txt"
        line = shlex.join([module, *args])
        if not stale and output.exists() and marker.is_file() and marker.read_text() == line:
            print(f"\nreusing {name}: {output} ($ python -m {line})", flush=True)
            return False
        marker.unlink(missing_ok=True)
        # the same training stopped before its end: the trainer continues from its last checkpoint
        again = module == "luab_fast.train" and not stale and started.is_file() and started.read_text() == line
        _atomic.write_text(started, line)
        run_cli(module, args + ["--resume"] * again, self.in_process)
        _atomic.write_text(marker, line)
        self.stale = self.stale or upstream
        return True


def train_args(demo: DemoPaths, mode: Mode, seed: int, out: Path) -> list[str]:
    """The demo's data and crowd labels through --data (the labels-only model alone), every split scored."""
    return ["--data", str(demo.train), "--val-data", f"iid={demo.iid}", f"ood={demo.ood}", "--labels",
            str(demo.labels), "--seed", str(seed), "--out", str(out), *mode.train_args]


def export_teacher(run: Path, out: Path) -> str:
    """The teacher's weights as the timm state dict ``relabel generate --model`` reads; returns the timm arch.
    Needed because generate loads timm state dicts, and the trainer's ``last.pt`` holds its own model's: the timm
    backbone under ``backbone.`` beside its own ``classifier`` head (a linear layer on the pooled features,
    which is what timm's classifier is)."""
    import timm
    import torch

    arch = json.loads((run / "metrics.json").read_text())["config"]["model"]
    model = torch.load(run / "baseline" / "last.pt", map_location="cpu", weights_only=True)["model"]
    head = timm.create_model(arch, pretrained=False).pretrained_cfg["classifier"]  # "fc" for the ResNets
    state = {k.removeprefix("backbone."): v for k, v in model.items() if k.startswith("backbone.")}
    state.update({f"{head}.{k.removeprefix('classifier.')}": v for k, v in model.items()
                  if k.startswith("classifier.")})
    with _atomic.atomic_path(out) as tmp:
        torch.save(state, tmp)
    return arch


def map_stats(store_path: Path, demo: DemoPaths, aggregated: Path) -> dict[str, Any]:
    """What the teacher's maps hold on the demo's train images: the whole-image target (what a student gets for
    a crop of the whole image) against the true class and against the aggregated labels it replaces, and the
    maps' top-1 class per cell inside the digit's box and on the background (the demo's spurious cue)."""
    import torch

    from luab_fast.ops import label_pool_targets
    from luab_fast.relabel import LabelMapStore

    store = LabelMapStore.open(store_path)
    manifest = demo.load_manifest()
    items = {it["stem"]: it for it in manifest["images"] if it["split"] == "train"}
    ids = store.ids
    truth = np.array([items[s]["class"] for s in ids])
    background = np.array([items[s]["background"] for s in ids])
    box = np.array([items[s]["box"] for s in ids], np.float64) / float(manifest["canvas"])
    scores, indices = store.gather(np.arange(len(ids)))
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(len(ids), 4).contiguous()
    target = label_pool_targets(scores, indices, whole, len(manifest["classes"])).numpy()
    centre = (np.arange(store.size) + 0.5) / store.size  # cell centres, rows = y
    inside_x = (centre >= box[:, 0, None]) & (centre < box[:, 2, None])  # [N, S]
    inside_y = (centre >= box[:, 1, None]) & (centre < box[:, 3, None])
    inside = inside_y[:, :, None] & inside_x[:, None, :]  # [N, S, S]
    top1 = indices[:, 0].numpy()  # rank 0: each cell's top-1 class
    agg = pd.read_csv(aggregated, dtype={"task": str}).set_index("task")["label"].reindex(ids).to_numpy()
    names_truth = top1 == truth[:, None, None]
    return {"images": len(ids), "map_side": store.size, "topk": store.topk,
            "aggregated_labels_correct": float((agg == truth).mean()),
            "whole_image_target_correct": float((target.argmax(1) == truth).mean()),
            "whole_image_target_true_class_prob": float(target[np.arange(len(ids)), truth].mean()),
            "cells_in_digit_box": float(inside.mean()),
            "digit_cells_top1_true_class": float(names_truth[inside].mean()),
            "background_cells_top1_true_class": float(names_truth[~inside].mean()),
            "background_cells_top1_background_class": float((top1 == background[:, None, None])[~inside].mean()),
            "maps_one_class_everywhere": float((top1 == top1[:, :1, :1]).all((1, 2)).mean())}


def top1(run: Path) -> dict[str, Any]:
    m = json.loads((run / "metrics.json").read_text())["models"]["baseline"]
    return {"iid": m["eval"]["iid"]["top1"], "ood": m["eval"]["ood"]["top1"], "steps": m["steps"],
            "train_seconds": m["train_seconds"]}


def summarise(rows: list[dict[str, Any]], skipped: dict[str, str]) -> list[dict[str, Any]]:
    """Per variant: mean and per-seed top-1 on iid and ood, and the mean per-seed difference to the labels-only
    baseline and to the variant's own baseline (the seeds both ran)."""
    runs = pd.DataFrame(rows)
    out = []
    for v in VARIANTS:
        if v.name in skipped:
            out.append({"variant": v.name, "baseline": v.baseline, "not_run": skipped[v.name]})
            continue
        mine = runs[runs["variant"] == v.name].set_index("seed") if len(runs) else runs
        if mine.empty:
            continue
        entry: dict[str, Any] = {"variant": v.name, "baseline": v.baseline, "seeds": mine.index.tolist()}
        for split in ("iid", "ood"):
            entry[split] = float(mine[split].mean())
            entry[f"{split}_per_seed"] = mine[split].tolist()
            for ref in dict.fromkeys(("labels", v.baseline)):
                other = runs[runs["variant"] == ref].set_index("seed")[split]
                diff = (mine[split] - other.reindex(mine.index)).dropna()
                if ref != v.name and len(diff):
                    entry[f"{split}_vs_{ref}"] = float(diff.mean())
                    entry[f"{split}_vs_{ref}_per_seed"] = diff.tolist()
        out.append(entry)
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    def pts(e: dict[str, Any], key: str) -> str:
        return f"{100 * e[key]:+.2f}" if key in e else "–"

    lines = ["| variant | iid top-1 (per seed) | ood top-1 (per seed) | Δ iid / ood vs labels (pts) | "
             "Δ iid / ood vs own baseline (pts) |", "|---|---|---|---|---|"]
    for e in summary:
        if "not_run" in e:
            lines.append(f"| {e['variant']} | {e['not_run']} | | | |")
            continue
        cells = [f"{100 * e[s]:.2f}% ({', '.join(f'{100 * x:.1f}' for x in e[f'{s}_per_seed'])})"
                 for s in ("iid", "ood")]
        own = (f"{pts(e, 'iid_vs_' + e['baseline'])} / {pts(e, 'ood_vs_' + e['baseline'])} ({e['baseline']})"
               if e["baseline"] != "labels" else "")
        lines.append(f"| {e['variant']} | {cells[0]} | {cells[1]} | {pts(e, 'iid_vs_labels')} / "
                     f"{pts(e, 'ood_vs_labels')} | {own} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.relabel_evidence", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the tiny demo, 1 step per model, seed 0 (a smoke run)")
    p.add_argument("--seeds", type=int, nargs="+", help="student seeds (default: 0 1; --quick: 0)")
    p.add_argument("--teacher-epochs", type=int, default=6,
                   help="the teacher's epochs: twice the students' 3, for a teacher better than its students as "
                        "ReLabel's is (ignored with --quick) (default: 6)")
    p.add_argument("--work", default=str(ROOT / "runs" / "relabel_evidence"),
                   help="run folders, label maps and the store; a rerun reuses its finished steps")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder of the results JSON")
    p.add_argument("--map-size", type=int, help="relabel generate --size: the side the teacher sees each image at "
                                                "(default: 64, the demo's training crop side)")
    p.add_argument("--demo-root", help="where the demo is (generated there if absent; default: the cache, as "
                                       "python -m luab_fast.train's)")
    p.add_argument("--in-process", action="store_true",
                   help="run each command's entry point in this process (same arguments; no interpreter start)")
    args = p.parse_args(argv)
    mode = QUICK if args.quick else FULL
    seeds = tuple(args.seeds) if args.seeds else mode.seeds
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        p.error(f"--seeds: expected distinct non-negative integers, got {list(seeds)}")
    if args.map_size is not None and args.map_size < 1:
        p.error(f"--map-size: expected a positive number of pixels, got {args.map_size}")
    if args.teacher_epochs < 1:
        p.error(f"--teacher-epochs: expected a positive integer, got {args.teacher_epochs}")
    work, out = Path(args.work).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    stamp = _env.now_utc().strftime("%Y%m%dT%H%M%SZ")
    path = out / f"relabel-evidence{'-quick' if args.quick else ''}-{stamp}.json"
    demo = ensure_demo(args.demo_root, size=mode.demo_size)
    steps = Steps(work, args.in_process)
    teacher = work / "teacher"
    extra = [] if args.quick else ["--epochs", str(args.teacher_epochs)]
    steps.run("teacher", "luab_fast.train", train_args(demo, mode, TEACHER_SEED, teacher) + extra,
              teacher / "metrics.json", upstream=True)
    arch = export_teacher(teacher, work / "teacher_timm.pth")
    maps, store = work / "maps", work / "relabel.store"
    steps.run("generate", "luab_fast.relabel",
              ["generate", "--model", str(work / "teacher_timm.pth"), "--arch", arch, "--images", str(demo.train),
               "--out", str(maps), "--size", str(args.map_size or mode.map_size), "--batch-size", "64", "--quiet"],
              maps, upstream=True)
    steps.run("pack", "luab_fast.relabel", ["pack", str(maps), str(store), "--num-classes",
                                            str(len(demo.load_manifest()["classes"])), "--quiet"], store,
              upstream=True)
    doc: dict[str, Any] = {"date": stamp, "mode": "quick" if args.quick else "full", "demo": str(demo.root),
                           "seeds": list(seeds), "environment": _env.environment(),
                           "teacher": {**top1(teacher), "arch": arch, "seed": TEACHER_SEED,
                                       "command": steps.command("teacher")},
                           "maps": {**map_stats(store, demo, teacher / "aggregated_labels.csv"),
                                    "commands": [steps.command(s) for s in ("generate", "pack")]}}
    skipped = {} if cutmix_available(args.in_process) else {v.name: NO_CUTMIX for v in VARIANTS if v.cutmix}
    rows: list[dict[str, Any]] = []
    doc.update(runs=rows, summary=summarise(rows, skipped))
    _atomic.write_text(path, json.dumps(doc, indent=1))  # the teacher and its maps, before the long part
    # the core comparison (labels, relabel) seed by seed first, then the CutMix variants seed by seed
    order = [(v, seed) for cut in (False, True) for seed in seeds for v in VARIANTS if v.cutmix == cut]
    for v, seed in order:
        if v.name not in skipped:
            run = work / f"{v.name}-seed{seed}"
            cli = train_args(demo, mode, seed, run) + [str(store) if a == MAPS else a for a in v.args]
            steps.run(run.name, "luab_fast.train", cli, run / "metrics.json", reads=MAPS in v.args)
            rows.append({"variant": v.name, "seed": seed, **top1(run), "command": steps.command(run.name)})
            doc.update(runs=rows, summary=summarise(rows, skipped))
            _atomic.write_text(path, json.dumps(doc, indent=1))
    doc.update(runs=rows, summary=summarise(rows, skipped))
    _atomic.write_text(path, json.dumps(doc, indent=1))
    t, m = doc["teacher"], doc["maps"]
    print(f"\nteacher ({arch}, seed {TEACHER_SEED}, {t['steps']} steps): iid {100 * t['iid']:.2f}%, ood "
          f"{100 * t['ood']:.2f}%; its whole-image targets name the true class on "
          f"{100 * m['whole_image_target_correct']:.2f}% of the train images (the aggregated labels on "
          f"{100 * m['aggregated_labels_correct']:.2f}%); {m['map_side']}×{m['map_side']} maps, top-1 = true class "
          f"on {100 * m['digit_cells_top1_true_class']:.1f}% of digit cells, "
          f"{100 * m['background_cells_top1_true_class']:.1f}% of background cells")
    print("\n" + markdown(doc["summary"]))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
