"""``python -m luab_fast.train``: data set-up (the demo by default), a labels-only baseline and a LUAB model,
evaluation on every split, the report. Works single-process or under ``torchrun`` (DDP, gloo on CPU)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch

from .. import _atomic, _cli
from .._cli import DataError, UsageError
from ..data.loader import build_loader
from ..data.source import list_images
from . import checkpoint as ckpt
from .config import TrainConfig, load_config
from .loop import Trainer, append_jsonl, evaluate
from .model import LUABModel
from .report import plot_attention, plot_curves, table


def _say(rank: int):
    def say(msg: str) -> None:
        if rank == 0:
            print(msg, flush=True)
    return say


def _wants_cuda(cfg: TrainConfig) -> bool:
    """Whether this run trains on CUDA: ``--device``, or for auto what the machine has."""
    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


def _distributed(cfg: TrainConfig) -> tuple[int, int]:
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 0
    if world < 1:  # torchrun sets it to the number of processes
        raise UsageError(f"WORLD_SIZE: expected a number of processes >= 1, got {os.environ['WORLD_SIZE']!r}; "
                         f"unset it, or launch with torchrun --nproc_per_node=N -m luab_fast.train ...")
    if world > 1 and not torch.distributed.is_initialized():
        lacking = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if lacking:
            raise ValueError(f"WORLD_SIZE={world} is set but {', '.join(lacking)} not: launch several processes "
                             f"with torchrun --nproc_per_node=N -m luab_fast.train ...")
        if os.environ["RANK"] == "0":  # a process that never comes leaves the others waiting here: say so
            print(f"waiting for {world} processes at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
                  flush=True)
        # by the training device, not by what the machine has: --device cpu on a GPU machine needs gloo
        torch.distributed.init_process_group("nccl" if _wants_cuda(cfg) else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def _device(cfg: TrainConfig, rank: int) -> torch.device:
    if not _wants_cuda(cfg):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is available")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    return torch.device("cuda", torch.cuda.current_device())


def aggregate_crowd(csv: Path, out: Path, say) -> Path:
    """Dawid-Skene on a raw crowd CSV (task, worker, label) → ``task,label`` for the loader."""
    from ..aggregate import DawidSkene

    try:
        df = pd.read_csv(csv, dtype={"task": str, "worker": str})
        model = DawidSkene().fit(df)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:  # EmptyDataError is a ValueError
        raise DataError(f"--labels {csv} (crowd labels: task, worker, label): {exc}") from None
    labels = model.labels_
    with _atomic.atomic_path(out) as tmp:  # a killed run must not leave a half-written file to be reused
        pd.DataFrame({"task": labels.index.astype(str), "label": labels.to_numpy()}).to_csv(tmp, index=False)
    say(f"aggregated {len(df):,} crowd labels of {len(labels):,} images with Dawid-Skene → {out}")
    return out


def _val_splits(cfg: TrainConfig, val: dict[str, Path]) -> dict[str, Path]:
    """``--val-data`` NAME=DIR items (a bare DIR is named after its folder) added to ``val``."""
    val = dict(val)
    for item in cfg.val_data or []:
        name, _, path = item.partition("=")
        if not path:
            name, path = Path(item).name, item
        if not name:
            raise ValueError(f"--val-data {item!r}: empty split name; give NAME=DIR")
        if name in val:
            raise ValueError(f"--val-data: split name {name!r} given twice ({val[name]} and {path}); "
                             f"name each split NAME=DIR")
        if not Path(path).exists():
            raise ValueError(f"--val-data {name}={path}: {path} does not exist")
        val[name] = Path(path)
    return val


def eval_source(path: Path, split: str, classes: tuple[str, ...]):
    """The split's images labelled by the *training* classes, matched by name (an ImageFolder's folder names,
    a list file's label ids): a split holding a subset of the classes, or in another folder order, still scores
    right. A class training never saw is an error: no logit could be right for it."""
    images = list_images(path, min_classes=1)  # an evaluation split may hold one class
    if images.classes == classes:
        return path
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted(set(images.classes[k] for k in np.unique(images.labels)) - set(index))
    if unknown:
        raise DataError(f"--val-data {split}={path}: {len(unknown)} class(es) are not among the "
                        f"{len(classes)} training classes, e.g. {unknown[:5]}")
    return list(images.files), np.asarray([index[images.classes[k]] for k in images.labels], np.int64)


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _given_labels(cfg: TrainConfig, run_dir: Path, say, rank: int) -> Optional[Path]:
    """``--labels`` as given, or first aggregated with Dawid-Skene when it is a raw crowd CSV (a ``worker``
    column); rank 0 writes, the other ranks wait for it."""
    if not cfg.labels:
        return None
    labels = Path(cfg.labels)
    if not labels.is_file():
        raise ValueError(f"--labels {labels} " + ("is a directory, expected a CSV file" if labels.exists()
                                                  else "does not exist"))
    try:
        columns = pd.read_csv(labels, nrows=1).columns
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"--labels {labels}: not a readable CSV ({exc})") from None
    if "worker" not in columns:
        return labels
    out = run_dir / "aggregated_labels.csv"
    if rank == 0:
        aggregate_crowd(labels, out, say)
    _barrier()
    return out


def _setup_data(cfg: TrainConfig, run_dir: Path, say, rank: int) -> dict[str, Any]:
    if cfg.data is None:
        from ..data.demo import ensure_demo

        t0 = time.perf_counter()
        paths = ensure_demo(cfg.demo_root, seed=0, size=cfg.demo_size)
        say(f"demo dataset ({cfg.demo_size}) at {paths.root} ({time.perf_counter() - t0:.1f} s)")
        manifest = json.loads(paths.manifest.read_text())
        canvas = float(manifest["canvas"])
        boxes = {it["stem"]: np.asarray(it["box"], np.float64) / canvas for it in manifest["images"]}
        labels = _given_labels(cfg, run_dir, say, rank)  # e.g. python -m luab_fast.annotate's on the demo
        if labels is None:  # the demo's crowd, aggregated afresh: the run directory may hold another demo's
            labels = run_dir / "aggregated_labels.csv"
            if rank == 0:
                aggregate_crowd(paths.labels, labels, say)
                truth = pd.read_csv(paths.truth, dtype={"task": str}).set_index("task")["label"]
                agg = pd.read_csv(labels, dtype={"task": str}).set_index("task")["label"]
                say(f"aggregated labels agree with the truth on {100 * (agg == truth.loc[agg.index]).mean():.2f}% "
                    "of the training images")
            _barrier()
        val = _val_splits(cfg, {"iid": paths.iid, "ood": paths.ood})
        return dict(train=paths.train, val=val, byproducts=cfg.byproducts or paths.store, labels=labels,
                    boxes=boxes, ood_traces=paths.ood_store)
    if not Path(cfg.data).exists():
        raise ValueError(f"--data {cfg.data} does not exist (expected an ImageFolder directory or a text file of "
                         f"'path label' lines)")
    val = _val_splits(cfg, {})
    labels = _given_labels(cfg, run_dir, say, rank)
    boxes = store_boxes(cfg.byproducts) if cfg.byproducts else None
    if boxes:
        say(f"{len(boxes):,} images of the byproduct store have ILSVRC boxes: localisation is scored on those")
    return dict(train=Path(cfg.data), val=val, byproducts=cfg.byproducts, labels=labels, boxes=boxes or None)


def store_boxes(path) -> dict[str, np.ndarray]:
    """stem → [n, 4] boxes normalised to the image, for the store's images that carry ILSVRC boxes and their
    size (ImageNet-AB's LOC subset): the evaluation scores the predicted point and heat-map peak against them
    on whatever split holds those images."""
    from ..byproducts import ByproductStore

    store = ByproductStore.open(path)
    off, sizes = np.asarray(store.arrays["box_offsets"]), np.asarray(store.arrays["size"], np.float64)
    ids = store.ids
    out = {}
    for i in np.flatnonzero((np.diff(off) > 0) & (sizes > 0).all(1)):
        w, h = sizes[i]
        out[str(ids[i])] = store.boxes(int(i)) / np.array([w, h, w, h])
    return out


def check_store_coverage(loader, name: str, cfg: TrainConfig, say) -> None:
    """Counts the training images a store lacks (their rows get weight 0, or as the class target their --labels
    target, else their folder label); ``--strict`` makes any an error, and a store that holds none of the images is
    always one."""
    t = loader.targets
    if t is None:
        return
    stems = loader.images.stems
    for option, store, rows, fallback in (
            ("--byproducts", t.byproducts, getattr(t, "bp_rows", None), "no byproducts (weight 0)"),
            ("--label-maps", t.label_maps, getattr(t, "lm_rows", None), "no label map (their "
             f"{'--labels target' if t.labels is not None else 'folder label'} is used)")):
        if store is None:
            continue
        absent = (rows < 0).cpu().numpy()
        missing = int(absent.sum())
        if not missing:
            continue
        if missing == len(stems):
            raise DataError(f"{option}: the store holds none of the {len(stems):,} training images (stores are "
                            f"keyed by file stem, e.g. {stems[0]!r}); is it the store of another dataset?")
        msg = (f"{name}: {missing:,} of {len(stems):,} training images have {fallback}, e.g. "
               f"{[s for s, a in zip(stems, absent) if a][:3]}")
        if cfg.strict:
            raise DataError(f"{option}: {msg}, and --strict is set")
        say(msg)


def train_model(name: str, cfg: TrainConfig, data: dict[str, Any], device, run_dir: Path, say, rank: int,
                world: int, log: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    luab = name == "luab"
    # read first: a file that is not a checkpoint is refused before the data and the model are set up
    saved = ckpt.load(run_dir / name / "last.pt") if cfg.resume else None
    torch.manual_seed(cfg.seed)  # both models start from the same weights
    images = list_images(data["train"])  # listed once, here: the batch size is checked before anything heavy
    if len(images) // world < cfg.batch_size:  # drop_last: no full batch (and DALI cannot build a 2**40 pipeline)
        per = f" over {world} processes" if world > 1 else ""
        raise UsageError(f"--batch-size {cfg.batch_size} is larger than the {len(images):,} training images"
                         f"{per} (full batches only, for fixed shapes); lower --batch-size")
    loader = build_loader(images, cfg.batch_size, train=True, device=device, image_size=cfg.image_size,
                          rank=rank, world_size=world, seed=cfg.seed, backend=cfg.backend, threads=cfg.workers,
                          byproducts=data["byproducts"] if luab else None,
                          label_maps=cfg.label_maps, labels=data["labels"],
                          heat_sigma=cfg.heat_sigma, crop_scale=(cfg.crop_scale, 1.0),
                          channels_last=device.type == "cuda")
    num_classes = len(loader.images.classes)
    t = loader.targets
    hard = t.labels if t is not None and t.labels is not None and t.labels.dim() == 1 else None
    if hard is not None and len(hard) and (int(hard.min()) < 0 or int(hard.max()) >= num_classes):
        # posterior columns are checked against the classes where the file is read (data/labels_table.py)
        raise DataError(f"--labels: label ids must lie in [0, {num_classes}) (the training data's classes), "
                         f"got [{int(hard.min())}, {int(hard.max())}]")
    if t is not None and t.label_maps is not None and t.num_classes != num_classes:
        raise DataError(f"--label-maps: the store's maps score {t.num_classes} classes, the training data has "
                        f"{num_classes} (its class k is the k-th folder in sorted order)")
    check_store_coverage(loader, name, cfg, say)
    pool = cfg.pool if luab else cfg.baseline_pool
    model = LUABModel(cfg.model, num_classes, cfg.output_stride, cfg.pretrained_path, pool,
                      cfg.image_size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    heat = model.heat_size(cfg.image_size)
    if luab and heat[0] * heat[1] < 4:  # one cell: the heat target is constant and attention pooling is avg
        raise ValueError(f"--image-size {cfg.image_size} gives {cfg.model} a {heat[0]}×{heat[1]} feature map: too "
                         f"coarse for heat-map targets; raise --image-size or lower --output-stride")
    if luab and cfg.heat_sigma > max(heat):  # wider than the map: every heat target is flat, nothing to learn
        raise UsageError(f"--heat-sigma: expected a splat width in (0, {max(heat)}] cells ({cfg.model}'s heat map "
                         f"is {heat[0]}×{heat[1]} at --image-size {cfg.image_size}; a wider splat makes every heat "
                         f"target flat), got {cfg.heat_sigma:g}")
    loader.set_heat_size(heat)  # the heat targets at the backbone's own map size
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None
    trainer = Trainer(name, model, loader, cfg, device, luab, run_dir, say, rank, ddp)
    if cfg.resume:
        trainer.resume(saved)
        del saved  # the model and optimiser hold their copies now
    classes = loader.images.classes
    evals = {k: build_loader(eval_source(v, k, classes), cfg.batch_size, train=False, device=device,
                             image_size=cfg.image_size, backend=cfg.backend, threads=cfg.workers, drop_last=False,
                             channels_last=device.type == "cuda")
             for k, v in data["val"].items()}

    def on_epoch_end(epoch: int) -> None:
        if rank == 0:
            for split, ev in evals.items():
                top1 = evaluate(model, ev, num_classes)["top1"]
                log({"model": name, "epoch": epoch, "step": trainer.state.step, f"{split}_top1": top1})
            model.train()

    t0 = time.perf_counter()
    if not trainer.done():
        trainer.fit(log, on_epoch_end)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"steps": trainer.state.step, "train_seconds": round(seconds, 2),
                              "img_per_s": loader.throughput(), "eval": {}}
    if rank == 0:
        for split, ev in evals.items():
            result["eval"][split] = evaluate(model, ev, num_classes, data["boxes"] if luab else None)
        if luab and "ood" in evals:
            plot_attention(model, evals["ood"], run_dir / "attention_ood.png", human=data["boxes"],
                           traces=data.get("ood_traces"))
    result["history"] = trainer.state.history
    return result


def _run_dir(cfg: TrainConfig) -> Path:
    """Creates ``--out``. An earlier run's files there are replaced only as this run writes its own (the log at
    its first record, the rest at the end), so a run that stops on a bad argument leaves them as they were."""
    run_dir = Path(cfg.out)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {run_dir}: cannot create the run directory ({exc.strerror or exc})") from None
    return run_dir


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the trainer; returns the exit status: 0, 2 for a bad argument, 1 for bad data (a file that cannot
    be read or does not fit), each with one ``error:`` line on stderr and no traceback (``luab_fast._cli``)."""
    return _cli.run(_main, argv)


def _main(argv: Optional[list[str]] = None) -> int:
    cfg = load_config(argv)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    rank, world = _distributed(cfg)
    say = _say(rank)
    run_dir = _run_dir(cfg)
    device = _device(cfg, rank)
    data = _setup_data(cfg, run_dir, say, rank)
    if not data["val"]:
        say("no --val-data: the models are trained, not evaluated (give NAME=DIR splits to score them)")
    models = ["baseline", "luab"] if cfg.compare and data["byproducts"] else ["luab"]
    if not data["byproducts"]:
        models = ["baseline"]
        say("no --byproducts: training on labels only")
    # one log for both models; without --resume its first record replaces an earlier run's log
    log = append_jsonl(run_dir / "log.jsonl", fresh=not cfg.resume) if rank == 0 else (lambda r: None)
    results = {m: train_model(m, cfg, data, device, run_dir, say, rank, world, log) for m in models}
    if rank == 0:
        histories = {m: r.pop("history") for m, r in results.items()}
        metrics = {"config": vars(cfg), "device": str(device), "world_size": world, "models": results}
        _atomic.write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
        plot_curves(histories, run_dir / "curves.png")
        if not ("luab" in results and "ood" in data["val"]):  # an earlier run's figure must not pass for this one's
            (run_dir / "attention_ood.png").unlink(missing_ok=True)
        print("\n" + table(metrics) + "\n")
        print(f"run directory: {run_dir} (metrics.json, log.jsonl, curves.png"
              + (", attention_ood.png)" if (run_dir / "attention_ood.png").exists() else ")"))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
