"""``python -m luab_fast.train``: the data set up (inputs.py; the demo by default), then a labels-only baseline
and a LUAB model, each built, trained and evaluated on every split (``train_model``), then the report. Works
single-process or under ``torchrun`` (DDP, gloo on CPU)."""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .. import _atomic, _cli
from .._cli import DataError, UsageError
from ..data.augment import build_augment
from ..data.crops import RATIO
from ..data.loader import Loader, build_loader
from ..data.mixing import Mixing
from ..data.source import ImageList, list_images
from ..data.targets import Targets
from ..evaluate.trainer import kind_loader, split_kinds
from . import checkpoint as ckpt
from .config import TrainConfig, load_config, model_kwargs
from .evaluate import evaluate
from .inputs import TrainData, eval_source, setup_data
from .loop import Trainer
from .model import LUABModel
from .progress import JsonlLog
from .report import plot_attention, plot_curves, table
from .summary_logs import RunLogs, open_logs


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


def train_model(name: str, cfg: TrainConfig, data: TrainData, device, run_dir: Path, say, rank: int, world: int,
                log: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Builds, trains, evaluates one model: the ``baseline`` on the class targets alone, ``luab`` with the
    byproducts too. Returns its metrics.json entry, with its history."""
    luab = name == "luab"
    # read first: a file that is not a checkpoint is refused before the data and the model are set up
    saved = ckpt.load(run_dir / name / "last.pt") if cfg.resume else None
    torch.manual_seed(cfg.seed)  # both models start from the same weights
    images = training_images(data.train, cfg, world)
    model = build_model(cfg, len(images.classes), cfg.pool if luab else cfg.baseline_pool, device)
    heat_size = heat_map_size(model, cfg) if luab else None  # the size the loader rasterises the traces at
    loader = train_loader(images, cfg, device, rank, world, data.labels, data.byproducts if luab else None,
                          heat_size)
    check_store_coverage(loader.targets, name, cfg, say)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None
    trainer = Trainer(name, model, loader, cfg, device, run_dir, say, rank, ddp)
    if cfg.resume:
        trainer.resume(saved)
        del saved  # the model and optimiser hold their copies now
    evals = eval_loaders(data.val, images.classes, cfg, device)
    logs = open_logs(cfg, name, run_dir, rank)  # summary.csv, and TensorBoard / wandb where asked for
    try:
        seconds = train(trainer, logs.wrap(log), functools.partial(log_top1, trainer, evals, log, logs))
    finally:
        logs.close()
    scores = evaluate_splits(model, evals, len(images.classes), data.boxes if luab else None) if rank == 0 else {}
    if rank == 0 and trainer.ema is not None:  # the EMA weights scored beside the raw ones: <split>_ema
        ema = evaluate_splits(trainer.ema.module, evals, len(images.classes), data.boxes if luab else None)
        scores.update({f"{split}_ema": v for split, v in ema.items()})
    if rank == 0 and luab and "ood" in evals:
        plot_attention(model, evals["ood"], run_dir / "attention_ood.png", human=data.boxes, traces=data.ood_traces)
    return {"steps": trainer.state.step, "train_seconds": round(seconds, 2), "img_per_s": loader.throughput(),
            "eval": scores, "history": trainer.state.history}


def training_images(source: Path, cfg: TrainConfig, world: int) -> ImageList:
    """The training images, listed once, here: the batch size is checked before anything heavy."""
    images = list_images(source)
    if len(images) // world < cfg.batch_size:  # drop_last: no full batch (and DALI cannot build a 2**40 pipeline)
        per = f" over {world} processes" if world > 1 else ""
        raise UsageError(f"--batch-size {cfg.batch_size} is larger than the {len(images):,} training images"
                         f"{per} (full batches only, for fixed shapes); lower --batch-size")
    return images


def build_model(cfg: TrainConfig, num_classes: int, pool: str, device: torch.device) -> LUABModel:
    model = LUABModel(cfg.model, num_classes, cfg.output_stride, cfg.pretrained_path, pool, cfg.image_size,
                      drop=cfg.drop, drop_path=cfg.drop_path, model_kwargs=model_kwargs(cfg),
                      pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def heat_map_size(model: LUABModel, cfg: TrainConfig) -> tuple[int, int]:
    """(h, w) of the model's heat map at --image-size: the heat targets must be rasterised at the backbone's own
    map size (image_size / stride is wrong for ViTs and valid-padded nets); refused where nothing can be learnt."""
    heat = model.heat_size(cfg.image_size)
    if heat[0] * heat[1] < 4:  # one cell: the heat target is constant and attention pooling is avg
        raise ValueError(f"--image-size {cfg.image_size} gives {cfg.model} a {heat[0]}×{heat[1]} feature map: too "
                         f"coarse for heat-map targets; raise --image-size or lower --output-stride")
    if cfg.heat_sigma > max(heat):  # wider than the map: every heat target is flat, nothing to learn
        raise UsageError(f"--heat-sigma: expected a splat width in (0, {max(heat)}] cells ({cfg.model}'s heat map "
                         f"is {heat[0]}×{heat[1]} at --image-size {cfg.image_size}; a wider splat makes every heat "
                         f"target flat), got {cfg.heat_sigma:g}")
    return heat


def train_loader(images: ImageList, cfg: TrainConfig, device: torch.device, rank: int, world: int,
                 labels: Optional[Path], byproducts: Any, heat_size: Optional[tuple[int, int]]) -> Loader:
    """The training batches: their class targets and, with ``byproducts``, the byproduct targets at
    ``heat_size``."""
    return build_loader(images, cfg.batch_size, train=True, device=device, image_size=cfg.image_size, rank=rank,
                        world_size=world, seed=cfg.seed, backend=cfg.backend, threads=cfg.workers,
                        byproducts=byproducts, label_maps=cfg.label_maps, labels=labels, heat_size=heat_size,
                        heat_sigma=cfg.heat_sigma, crop_scale=(cfg.crop_scale, 1.0),
                        channels_last=device.type == "cuda", **augmentation(cfg))


def augmentation(cfg: TrainConfig) -> dict[str, Any]:
    """build_loader's mixing and augmentation arguments from the options (--mixup/--cutmix..., --aa, --reprob,
    --color-jitter, --ratio, --interpolation): none of them on by default."""
    return {"mixing": Mixing.from_config(cfg),
            "augment": build_augment(cfg.image_size, cfg.aa, cfg.color_jitter, cfg.reprob, cfg.remode, cfg.recount,
                                     cfg.interpolation),
            "crop_ratio": tuple(cfg.ratio) if cfg.ratio else RATIO, "interpolation": cfg.interpolation}


def check_store_coverage(targets: Targets, name: str, cfg: TrainConfig, say) -> None:
    """Counts the training images a store lacks (their rows get weight 0, or as the class target their --labels
    target, else their folder label); ``--strict`` makes any an error, and a store that holds none of the images is
    always one."""
    for store in targets.coverage():
        missing = len(store.lacking)
        if not missing:
            continue
        if missing == store.images:
            raise DataError(f"{store.option}: the store holds none of the {store.images:,} training images (stores "
                            f"are keyed by file stem, e.g. {store.lacking[0]!r}); is it the store of another "
                            f"dataset?")
        msg = (f"{name}: {missing:,} of {store.images:,} training images have {store.fallback}, e.g. "
               f"{list(store.lacking[:3])}")
        if cfg.strict:
            raise DataError(f"{store.option}: {msg}, and --strict is set")
        say(msg)


def eval_loaders(splits: dict[str, Path], classes: tuple[str, ...], cfg: TrainConfig,
                 device: torch.device) -> dict[str, Loader]:
    """Every evaluation split, in its fixed order, labelled by the training classes (by wnid through its kind
    for ``--val-data NAME=KIND:PATH``: luab_fast.evaluate)."""
    kinds = split_kinds(cfg)[1]
    return {k: kind_loader(v, k, kinds[k], classes, cfg, device) if k in kinds else
            build_loader(eval_source(v, k, classes), cfg.batch_size, train=False, device=device,
                         image_size=cfg.image_size, backend=cfg.backend, threads=cfg.workers, drop_last=False,
                         channels_last=device.type == "cuda")
            for k, v in splits.items()}


def train(trainer: Trainer, log: Callable[[dict[str, Any]], None], on_epoch_end: Callable[[int], None]) -> float:
    """Trains to the end (nothing left when a resumed run had finished); returns the seconds it took."""
    t0 = time.perf_counter()
    if not trainer.done():
        trainer.fit(log, on_epoch_end)
    return time.perf_counter() - t0


def log_top1(trainer: Trainer, evals: dict[str, Loader], log: Callable[[dict[str, Any]], None],
             logs: Optional[RunLogs], epoch: int) -> Optional[dict[str, Any]]:
    """After an epoch (rank 0): each evaluation split's top-1 in the log (the EMA's too, ``<split>_ema_top1``),
    the epoch's row of summary.csv and its TensorBoard / wandb scalars (``logs``); returns the first split's
    metrics: its top-1 is what --sched plateau steps on, its --eval-metric what --checkpoint-hist ranks by."""
    if trainer.rank != 0:
        return None
    num_classes = len(trainer.loader.images.classes)
    first = None
    splits = {}
    for split, ev in evals.items():
        scores = evaluate(trainer.model, ev, num_classes)
        top1 = scores["top1"]
        first = scores if first is None else first
        splits[split] = scores
        record = {"model": trainer.name, "epoch": epoch, "step": trainer.state.step, f"{split}_top1": top1}
        if trainer.ema is not None:
            record[f"{split}_ema_top1"] = evaluate(trainer.ema.module, ev, num_classes)["top1"]
        log(record)
    if logs is not None:  # the epoch's row (no --val-data: the train loss and lr alone)
        logs.epoch(epoch, trainer.state.step, trainer.state.history, splits)
    trainer.model.train()
    return first


def evaluate_splits(model: LUABModel, evals: dict[str, Loader], num_classes: int,
                    boxes: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Each split's metrics (``evaluate``); localisation where ``boxes`` holds its images' boxes."""
    return {split: evaluate(model, ev, num_classes, boxes) for split, ev in evals.items()}


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
    if cfg.eval_only is not None:
        from .eval_only import eval_only

        return eval_only(cfg)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    rank, world = _distributed(cfg)
    say = _say(rank)
    run_dir = _run_dir(cfg)
    device = _device(cfg, rank)
    data = setup_data(split_kinds(cfg)[0], run_dir, say, rank)  # NAME=KIND:PATH splits: read by their kind
    if not data.val:
        if cfg.sched == "plateau":  # it steps on an evaluation metric
            raise UsageError("--sched plateau needs an evaluation split (--val-data NAME=DIR): it lowers the "
                             "learning rate when the first split's top-1 stops improving")
        if cfg.checkpoint_hist:  # it ranks the epochs by an evaluation metric
            raise UsageError(f"--checkpoint-hist {cfg.checkpoint_hist} needs an evaluation split (--val-data "
                             f"NAME=DIR): it keeps the epochs with the best --eval-metric {cfg.eval_metric} of the "
                             f"first split")
        say("no --val-data: the models are trained, not evaluated (give NAME=DIR splits to score them)")
    models = models_to_train(cfg, data, say)
    # one log for both models; without --resume its first record replaces an earlier run's log
    log = JsonlLog(run_dir / "log.jsonl", fresh=not cfg.resume) if rank == 0 else _no_log
    results = {m: train_model(m, cfg, data, device, run_dir, say, rank, world, log) for m in models}
    if rank == 0:
        write_results(results, cfg, data, device, world, run_dir)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def models_to_train(cfg: TrainConfig, data: TrainData, say) -> list[str]:
    """The LUAB model where there are byproducts, beside the labels-only baseline with --compare."""
    if not data.byproducts:
        say("no --byproducts: training on labels only")
        return ["baseline"]
    return ["baseline", "luab"] if cfg.compare else ["luab"]


def _no_log(record: dict[str, Any]) -> None:
    """The log of ranks other than 0: rank 0 writes it."""


def write_results(results: dict[str, dict[str, Any]], cfg: TrainConfig, data: TrainData, device: torch.device,
                  world: int, run_dir: Path) -> None:
    """metrics.json, the curves, the table printed (rank 0)."""
    histories = {m: r.pop("history") for m, r in results.items()}
    metrics = {"config": vars(cfg), "device": str(device), "world_size": world, "models": results}
    _atomic.write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    plot_curves(histories, run_dir / "curves.png")
    if not ("luab" in results and "ood" in data.val):  # an earlier run's figure must not pass for this one's
        (run_dir / "attention_ood.png").unlink(missing_ok=True)
    print("\n" + table(metrics) + "\n")
    print(f"run directory: {run_dir} (metrics.json, log.jsonl, curves.png"
          + (", attention_ood.png)" if (run_dir / "attention_ood.png").exists() else ")"))
