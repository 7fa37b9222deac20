"""``python -m luab_fast.evaluate``: the seed papers' result tables in one command.

    python -m luab_fast.evaluate --checkpoint runs/x/luab/last.pt --split val=imagenet:val v2=v2:imagenetv2/
    python -m luab_fast.evaluate --checkpoint A/last.pt B/last.pt --suite imagenet /data/imagenet --out cmp/
    python -m luab_fast.evaluate --model resnet50 --pretrained-path relabel_resnet50.pth --suite imagenet ROOT
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import textwrap
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .._cli import UsageError
from . import models as model_io
from . import results, runner
from .kinds import REGISTRY, Options
from .splits import parse_split, suite


def parser() -> argparse.ArgumentParser:
    kinds = "\n".join(textwrap.fill(k.about, 100, initial_indent=f"  {k.name:<12}", subsequent_indent=" " * 14)
                      for k in REGISTRY.values())
    p = argparse.ArgumentParser(
        prog="python -m luab_fast.evaluate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score trained models (this trainer's checkpoints, or a timm model with a local weights file)\n"
                    "on the standard ImageNet test sets; writes results.json, results.md and, for several\n"
                    "models, results.png to --out.",
        epilog=f"kinds (KIND in NAME=KIND:PATH; layouts and sources: docs/evaluation.md):\n{kinds}")
    m = p.add_argument_group("models (one or more)")
    m.add_argument("--checkpoint", nargs="+", action="extend", default=[], metavar="PT",
                   help="this trainer's checkpoints (last.pt, checkpoint-<epoch>.pt, model_best.pt)")
    m.add_argument("--model", help="a timm model name, scored with --pretrained-path's weights")
    m.add_argument("--pretrained-path", help="with --model: its weights (.pth/.pt/.safetensors, classifier included)")
    m.add_argument("--class-map", help="the model's classes: a file of wnids, one a line, line k naming class k "
                                       "(default: saved in the checkpoint; timm's ImageNet-1k list for --model)")
    m.add_argument("--ema", action="store_true", help="score the checkpoints' EMA weights (--model-ema runs)")
    s = p.add_argument_group("splits (one or more)")
    s.add_argument("--split", nargs="+", action="extend", default=[], metavar="NAME=KIND:PATH",
                   help=f"an evaluation split; KIND one of {', '.join(REGISTRY)}")
    s.add_argument("--suite", nargs=2, metavar=("imagenet", "ROOT"),
                   help="every standard test set found under ROOT by its usual folder name (docs/evaluation.md)")
    s.add_argument("--val-labels", help="the flat validation folder's labels: LOC_val_solution.csv or the devkit's "
                                        "ILSVRC2012_validation_ground_truth.txt (meta.mat beside it) (default: "
                                        "looked for in and above the folder)")
    s.add_argument("--real-labels", help="ReaL's real.json (default: DIR/real.json)")
    s.add_argument("--multilabel-labels", help="Shankar et al.'s annotations, human_accuracy.pickle or .json "
                                               "(default: in DIR)")
    s.add_argument("--in9-map", help="backgrounds: in_to_in9.json of MadryLab/backgrounds_challenge (default: "
                                     "DIR/in_to_in9.json)")
    s.add_argument("--boxes", help="loc: the ILSVRC boxes, LOC_val_solution.csv or a folder of <image stem>.xml "
                                   "(default: the CSV in or above the folder, else XML beside each image)")
    s.add_argument("--in-distribution", help="imagenet-o: the ImageNet val images in wnid folders (default with "
                                             "--suite: its val)")
    r = p.add_argument_group("running")
    r.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    r.add_argument("--image-size", type=int, help="crop side (default: the checkpoint's training size; timm's "
                                                 "input size for --model)")
    r.add_argument("--crop-pct", metavar="F", help="every split's centre crop, as a fraction of the shorter side in "
                                                   "(0, 1] (timm's name; default: each kind's own protocol, "
                                                   "docs/evaluation-kinds.md: 0.875, or 1.0 where the authors' "
                                                   "code scores the whole image)")
    r.add_argument("--interpolation", default="bilinear", choices=("bilinear", "bicubic", "nearest"),
                   help="the resize filter (timm's name; default: bilinear, the loader's)")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda when available")
    r.add_argument("--backend", choices=("dali", "torchvision"), help="decode backend (default: dali when "
                                                                      "installed)")
    r.add_argument("--workers", type=int, help="decode threads (default: this process's cores, at most 16)")
    r.add_argument("--out", default="runs/eval", help="output folder (default: runs/eval)")
    return p


def _splits(args: argparse.Namespace) -> tuple[list[tuple[str, str, Path]], Options]:
    items = [parse_split(i, "--split") for i in args.split]
    files: dict[str, Path] = {}
    if args.suite:
        found, files = suite(args.suite[0], Path(args.suite[1]))
        items += found
    names = [n for n, _, _ in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--split: split name(s) {twice} given twice; name each split NAME=KIND:PATH")
    if not items:
        raise UsageError("give the splits to score: --split NAME=KIND:PATH ... or --suite imagenet ROOT")
    given = {k: getattr(args, k) for k in ("val_labels", "real_labels", "multilabel_labels", "in9_map")}
    for k, v in given.items():
        if v is not None and not Path(v).is_file():
            raise UsageError(f"--{k.replace('_', '-')} {v}: " + ("a folder, expected a file" if Path(v).exists()
                                                                   else "does not exist"))
    options = Options(val_labels=Path(given["val_labels"]) if given["val_labels"] else None,
                      real_labels=Path(given["real_labels"]) if given["real_labels"] else files.get("real"),
                      multilabel_labels=Path(given["multilabel_labels"]) if given["multilabel_labels"]
                      else files.get("multilabel"), in9_map=Path(given["in9_map"]) if given["in9_map"] else None,
                      in_distribution=Path(args.in_distribution) if args.in_distribution
                      else files.get("in_distribution"),
                      boxes=Path(args.boxes) if args.boxes else files.get("boxes"), crop_fraction=args.crop_pct)
    if options.boxes is not None and not options.boxes.exists():
        raise UsageError(f"--boxes {options.boxes} does not exist")
    if options.in_distribution is not None and not options.in_distribution.is_dir():
        raise UsageError(f"--in-distribution {options.in_distribution}: expected ImageNet val in wnid folders, "
                         + ("got a file" if options.in_distribution.exists() else "it does not exist"))
    # ImageNet first: its top-1 error is what ImageNet-C's relative mCE subtracts
    items.sort(key=lambda it: it[1] != "imagenet")
    return items, options


def _crop_pct(text: Optional[str]) -> Optional[float]:
    """--crop-pct's fraction (None: each kind's own)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:  # NaN fails too
        raise UsageError(f"--crop-pct: expected the centre crop's share of the shorter side, a number in (0, 1] "
                         f"(e.g. 0.875 or 1.0), got {text!r}")
    return value


def _models(args: argparse.Namespace) -> list[model_io.Scored]:
    class_map = Path(args.class_map) if args.class_map else None
    out = [model_io.from_checkpoint(Path(c), args.ema, args.image_size, class_map) for c in args.checkpoint]
    if args.model:
        if not args.pretrained_path:
            raise UsageError(f"--model {args.model}: give its weights, --pretrained-path FILE (a randomly "
                             f"initialised model scores nothing)")
        out.append(model_io.from_timm(args.model, Path(args.pretrained_path), args.image_size, class_map))
    elif args.pretrained_path:
        raise UsageError(f"--pretrained-path {args.pretrained_path}: give the timm model it belongs to, --model NAME")
    if not out:
        raise UsageError("give a model: --checkpoint RUN/.../last.pt ... or --model NAME --pretrained-path FILE")
    return out


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA device is available")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    args.crop_pct = _crop_pct(args.crop_pct)
    if args.ema and args.model and not args.checkpoint:
        raise UsageError("--ema picks the EMA weights of this trainer's checkpoints; --model's weights have none")
    items, options = _splits(args)  # before the models: a missing folder is reported at once
    device = _device(args.device)
    settings = dict(batch_size=args.batch_size, backend=args.backend, threads=args.workers,
                    crop_fraction=args.crop_pct, interpolation=args.interpolation)
    entries: list[dict[str, Any]] = []
    for scored in _models(args):
        model = model_io.prepare(scored, device)
        splits: dict[str, Any] = {}
        opts = options
        for name, kind, path in items:
            split = REGISTRY[kind].read(path, scored.classes, opts, name)
            how = runner.LoaderSettings(image_size=scored.image_size, **settings)
            loader = runner.split_loader(split, device, how)
            splits[name] = {"kind": kind, **runner.score(model.module, split, loader, len(scored.classes)),
                            "transform": runner.transform(split, how)}
            head = REGISTRY[kind].headline
            print(f"{scored.label} {name} ({kind}): {head} {100 * splits[name][head]:.2f}% of "
                  f"{splits[name]['n']:,} images", flush=True)
            if kind == "imagenet" and opts.clean_error is None:
                opts = dataclasses.replace(opts, clean_error=1.0 - splits[name]["top1"])
        entries.append({"label": scored.label, **scored.info, "splits": splits})
        del model
    doc = results.document(entries, _device_name(device))
    written = results.write(doc, Path(args.out))
    print(f"wrote {', '.join(map(str, written))}")
    return 0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"

