"""Every option of ``python -m luab_fast.train``: one dataclass, its ``--help`` text, YAML configs.

Precedence: defaults < ``--config file.yaml`` < options given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .._cli import UsageError

# the largest values the loaders can take (beyond them DALI aborts the process on its threads, a crop cannot be
# allocated, a seed overflows an int64): refused in validate(), before anything is set up
from ..data.loader import MAX_IMAGE_SIZE, MAX_SEED
from ..data.loader import MAX_THREADS as MAX_WORKERS


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    data: Optional[str] = _opt(None, "training images: ImageFolder directory or 'path label' list (default: the "
                                     "built-in demo)")
    val_data: list[str] = _opt(None, "evaluation splits, NAME=DIR (several after one flag, or the flag repeated); "
                                     "or NAME=KIND:PATH, scored as python -m luab_fast.evaluate scores KIND "
                                     "(imagenet, real, v2, sketch, r, a, ...); the demo adds iid= and ood=",
                               nargs="+", action="extend")
    byproducts: Optional[str] = _opt(None, "packed ImageNet-AB byproduct store (python -m luab_fast.byproducts pack)")
    label_maps: Optional[str] = _opt(None, "packed ReLabel label-map store: class targets become pooled soft labels")
    labels: Optional[str] = _opt(None, "aggregated labels or posteriors CSV (task,label | task,<class columns>) or "
                                       "a raw crowd CSV (task,worker,label: aggregated with Dawid-Skene first)")
    model: str = _opt("resnet10t", "timm backbone name")
    pretrained_path: Optional[str] = _opt(None, "starting weights: a state dict (.pt/.pth/.safetensors) of a "
                                                "whole timm model (its classifier too where [classes, features] "
                                                "fits), of a backbone alone, or this trainer's checkpoint")
    pretrained: bool = _opt(False, "timm's pretrained weights of --model (from the Hugging Face hub, or from "
                                   "--pretrained-file without network access)")
    pretrained_file: Optional[str] = _opt(None, "with --pretrained: a local file of timm's pretrained weights "
                                                "(timm.create_model(pretrained_cfg_overlay=dict(file=...)))")
    pool: str = _opt("attention", "feature pooling of the LUAB model's class and point heads: attention (weighted "
                                  "by the heat head's softmax, which LUAB trains on the annotators' traces), or avg",
                     choices=("avg", "attention"))
    baseline_pool: str = _opt("avg", "feature pooling of the labels-only baseline (with no traces to supervise it, "
                                     "attention pooling learned the demo's background alone: 11.6%% ood top-1 "
                                     "against 21-23%% with avg)", choices=("avg", "attention"))
    output_stride: int = _opt(16, "backbone output stride, for the backbones that take one (ResNets, ConvNeXts, "
                                  "...; ViTs and Swins keep their patch grid): the heat head predicts on the last "
                                  "feature map, image_size / this on a side")
    image_size: int = _opt(64, "training crop side in pixels")
    crop_scale: float = _opt(0.35, "smallest area fraction of a random training crop (RandomResizedCrop's scale "
                                   "minimum; ImageNet recipes use 0.08, which in a 3-epoch run crops the digit out "
                                   "of so many demo images that only the background is left to learn from)")
    # training augmentation (luab_fast/data/augment.py): timm's flags, drawn on the host per batch like the crops
    aa: Optional[str] = _opt(None, "timm's RandAugment / AutoAugment spec: rand-m9-mstd0.5-inc1, original, v0, "
                                   "... (no augmix, no trivial: timm has no such spec). Rotate / shear / translate "
                                   "move the click points and traces with the pixels (one affine per image; a "
                                   "click moved out of the image gets weight 0); --label-maps are then pooled over "
                                   "the part of the crop the image shows (with a rotation or shear, the bounding "
                                   "box of the output square mapped back into the crop). Photometric ops and "
                                   "random erasing leave every target as it is")
    reprob: float = _opt(0.0, "random erasing probability per image (timm's RandomErasing, on the normalised "
                              "images)")
    remode: str = _opt("pixel", "random erasing fill: const (0), rand (one normal value per channel) or pixel "
                                "(per pixel)", choices=("const", "rand", "pixel"))
    recount: int = _opt(1, "random erasing boxes per erased image")
    color_jitter: float = _opt(0.0, "colour jitter factor: brightness, contrast and saturation each uniform in "
                                    "[1 - f, 1 + f], in a random order (timm's; off under --aa, as in timm); 0: off")
    ratio: Optional[list[float]] = _opt(None, "RandomResizedCrop aspect ratio range, two numbers (default 3/4 "
                                              "4/3)", nargs=2)
    interpolation: str = _opt("bilinear", "resize filter of the crops (and of the --aa affine; DALI warps "
                                          "bilinearly for bicubic)", choices=("bilinear", "bicubic", "nearest"))
    epochs: int = _opt(3, "epochs (ignored with --max-steps)")
    max_steps: Optional[int] = _opt(None, "stop after this many optimiser steps")
    batch_size: int = _opt(64, "batch size per process")
    drop: float = _opt(0.0, "dropout before the class head (timm's head drop_rate)")
    drop_path: float = _opt(0.0, "stochastic depth rate of the backbone (timm's drop_path_rate)")
    model_kwargs: Optional[list[str]] = _opt(None, "more timm.create_model arguments, k=v (values read as YAML "
                                                   "scalars: 1, 0.5, true, silu)", nargs="+", action="extend")
    # optimiser (timm.optim.create_optimizer_v2) and schedule (timm.scheduler.create_scheduler_v2): train/optim.py
    opt: str = _opt("adamw", "optimiser by timm name: sgd, nesterov, momentum, adamw, adamp, lamb, lars, ... "
                             "(timm.optim.list_optimizers())")
    lr: float = _opt(2e-3, "peak learning rate")
    weight_decay: float = _opt(0.05, "weight decay (not on norms, biases and the model's no_weight_decay(), "
                                     "as timm does)")
    momentum: float = _opt(0.9, "momentum of the optimisers that have one (sgd, lars, ...)")
    opt_eps: Optional[float] = _opt(None, "optimiser epsilon (default: the optimiser's)")
    opt_betas: Optional[list[float]] = _opt(None, "optimiser betas, two numbers (default: the optimiser's)", nargs=2)
    layer_decay: Optional[float] = _opt(None, "layer-wise learning-rate decay (each layer below the top: lr × this)")
    sched: str = _opt("cosine", "learning-rate schedule, updated every optimiser step (plateau: every epoch, on "
                                "the first evaluation split's top-1)",
                      choices=("cosine", "step", "multistep", "plateau", "poly", "tanh", "constant"))
    warmup_epochs: float = _opt(0.0, "linear warm-up epochs (from --warmup-lr)")
    warmup_steps: Optional[int] = _opt(None, "linear warm-up in optimiser steps, instead of --warmup-epochs "
                                             "(default: 20 when --warmup-epochs is 0)")
    warmup_lr: float = _opt(1e-5, "learning rate the warm-up starts from")
    min_lr: float = _opt(0.0, "lowest learning rate of the schedule")
    cooldown_epochs: float = _opt(0.0, "epochs at --min-lr after the schedule (added to --epochs)")
    decay_epochs: float = _opt(90.0, "step: epochs between decays")
    decay_milestones: Optional[list[float]] = _opt(None, "multistep: epochs to decay at (default: 90 180 270)",
                                                   nargs="+")
    decay_rate: float = _opt(0.1, "step, multistep, plateau: lr factor at each decay; poly: the power")
    model_ema: bool = _opt(False, "keep an exponential moving average of the weights (timm ModelEmaV3) and "
                                  "evaluate it beside the raw weights")
    model_ema_decay: float = _opt(0.9998, "EMA decay")
    model_ema_warmup: bool = _opt(False, "EMA decay warm-up (timm's: low decay in the first steps)")
    clip_grad: Optional[float] = _opt(None, "clip gradients at this value (default: no clipping)")
    clip_mode: str = _opt("norm", "gradient clipping: norm (global L2), value, agc (adaptive, per unit)",
                          choices=("norm", "value", "agc"))
    grad_accum_steps: int = _opt(1, "batches per optimiser step (gradients accumulated; steps count optimiser "
                                    "steps)")
    amp_dtype: Optional[str] = _opt(None, "autocast dtype: bfloat16, float16 (with a GradScaler) or float32 "
                                          "(default: bfloat16 on CUDA, float32 on the CPU)",
                                    choices=("bfloat16", "float16", "float32"))
    label_smoothing: float = _opt(0.0, "label smoothing of the class loss")
    # CutMix / Mixup (luab_fast/data/mixing.py): timm's Mixup, on every target kind
    mixup: float = _opt(0.0, "Mixup alpha: λ ~ Beta(alpha, alpha), images and targets blended λ·a + (1 − λ)·b with "
                             "the batch flipped (timm's --mixup); on when > 0")
    cutmix: float = _opt(0.0, "CutMix alpha: the flipped batch's box pasted, λ = 1 − its area (timm's --cutmix); on "
                              "when > 0. Targets: class targets λ-mixed; trace heat maps pasted like the pixels, "
                              "renormalised; a click under the other image's box is dropped (weight 0), the click "
                              "of the image whose region holds it is kept (a's first); Mixup keeps a's click, "
                              "weight λ")
    cutmix_minmax: Optional[list[float]] = _opt(None, "CutMix box sides uniform in [min, max) of the crop side, "
                                                      "instead of from λ (timm's; sets the CutMix alpha to 1)",
                                                nargs=2)
    mixup_prob: float = _opt(1.0, "probability that a batch (or pair, element) is mixed")
    mixup_switch_prob: float = _opt(0.5, "with --mixup and --cutmix: probability of CutMix rather than Mixup")
    mixup_mode: str = _opt("batch", "one draw per batch, per pair (sample i and B − 1 − i) or per element",
                           choices=("batch", "pair", "elem"))
    mixup_off_epoch: int = _opt(0, "no mixing in the last N of --epochs (ReLabel's off_epoch: from epoch "
                                   "epochs − N on; timm's --mixup-off-epoch is the epoch itself); 0: never off")
    cutmix_relabel: str = _opt("mix", "--label-maps targets under CutMix: mix (ReLabel's: λ·pooled(a) + "
                                      "(1 − λ)·pooled(b), whole crops) or region (each map pooled over the region "
                                      "of it the mixed image shows)", choices=("mix", "region"))
    lambda_point: float = _opt(1.0, "weight of the click-point regression term")
    lambda_heat: float = _opt(1.0, "weight of the attention heat-map term")
    heat_sigma: float = _opt(1.0, "trace splat width in heat-map pixels")
    compare: bool = _opt(True, "train a labels-only baseline beside the LUAB model and report the difference "
                               "(--no-compare trains the LUAB model only)")
    out: str = _opt("runs/luab", "run directory (metrics.json, log.jsonl, checkpoints, figures)")
    resume: bool = _opt(False, "continue from the run directory's last checkpoint")
    checkpoint_every: int = _opt(50, "save a checkpoint every N steps (and at every epoch end)")
    checkpoint_hist: Optional[int] = _opt(None, "keep the best N epoch-end checkpoints by --eval-metric beside "
                                                "last.pt (checkpoint-<epoch>.pt, model_best.pt; timm's "
                                                "--checkpoint-hist); needs --val-data")
    eval_metric: str = _opt("top1", "what --checkpoint-hist ranks by: the first evaluation split's top1 or top5",
                            choices=("top1", "top5"))
    log_tensorboard: bool = _opt(False, "also write TensorBoard event files to <out>/<model>/tb/ (train loss parts "
                                        "and lr per step, each split's top1/top5 per epoch); needs the tensorboard "
                                        "package")
    log_wandb: bool = _opt(False, "also log the same scalars to Weights & Biases (wandb.init(dir=--out), its mode "
                                  "from WANDB_MODE, e.g. offline); needs the wandb package")
    wandb_project: str = _opt("luab_fast", "with --log-wandb: the wandb project")
    eval_only: Optional[str] = _opt(None, "evaluate this checkpoint (last.pt, checkpoint-<epoch>.pt, or a timm "
                                          "state dict of --model) on every --val-data split, without training; "
                                          "writes metrics.json to --out")
    ema: bool = _opt(False, "with --eval-only: evaluate the checkpoint's EMA weights (--model-ema runs)")
    seed: int = _opt(0, "seed of everything")
    deterministic: bool = _opt(False, "deterministic kernels and data order (a killed and resumed run ends equal)")
    compile: str = _opt("auto", "torch.compile the step: auto (on CUDA), on, off", choices=("auto", "on", "off"))
    device: str = _opt("auto", "auto, cpu or cuda")
    backend: Optional[str] = _opt(None, "decode backend: dali or torchvision (default: dali when installed)")
    workers: Optional[int] = _opt(None, "decode threads (default: this process's cores, at most 16)")
    strict: bool = _opt(False, "fail when a store lacks some of the images (default: weight 0, counted)")
    demo_size: str = _opt("default", "built-in demo size: default or tiny", choices=("default", "tiny"))
    demo_root: Optional[str] = _opt(None, "where the demo is generated (default: the cache directory)")
    config: Optional[str] = _opt(None, "YAML file holding any of these options")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m luab_fast.train",
        description="Train an image classifier on labels and annotation byproducts (LUAB). With no data "
                    "argument: the built-in demo end to end (baseline vs LUAB, iid and ood top-1).",
        epilog="Several processes (DDP, one per GPU; gloo on the CPU): torchrun --nproc_per_node=N -m luab_fast.train "
               "... . Stores and --labels are matched to the images by file stem.")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        help_ = meta.pop("help") + f" (default: {f.default})"
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            kind = {"int": int, "float": float, "Optional[int]": int, "Optional[float]": float,
                    "Optional[list[float]]": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=None, help=help_, **meta)
    return p


def load_config(argv: Optional[list[str]] = None) -> TrainConfig:
    """Parses ``argv``; raises SystemExit (argparse) or ValueError naming the option on bad values."""
    args = vars(parser().parse_args(argv))
    values: dict[str, Any] = {}
    if args.get("config"):
        values.update(_read_yaml(Path(args["config"])))
    values.update({k: v for k, v in args.items() if v is not None})
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    """The options of a YAML config, each checked and converted as argparse would a command-line value."""
    import yaml

    if path.is_dir():
        raise ValueError(f"--config {path} is a directory, expected a YAML file")
    if not path.is_file():
        raise ValueError(f"--config {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_bytes())  # bytes: a binary file is a YAMLError, not a UnicodeDecodeError
    except OSError as exc:
        raise ValueError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"--config {path}: invalid YAML{where}: {problem}") from None
    if loaded is None:  # an empty file (or only comments)
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"--config {path}: expected a mapping of option: value, got a {type(loaded).__name__}")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    names = {str(k): str(k).replace("-", "_") for k in loaded}  # a YAML key may be a number or bool (on:)
    # timm's mixing / augmentation options: known, not implemented yet; a recipe naming one is refused, not run
    later = sorted(k for k, name in names.items() if name not in fields and name in {
        "aug_repeats", "jsd_loss", "bce_loss"})
    if later:
        one = len(later) == 1
        raise ValueError(f"--config {path}: {', '.join(later)} {'is' if one else 'are'} not available yet "
                         f"(timm's repeated augmentation and JSD / BCE losses are not implemented); this recipe "
                         f"needs {'it' if one else 'them'} and is not run without {'it' if one else 'them'}")
    unknown = sorted(k for k, name in names.items() if name not in fields)
    if unknown:
        raise ValueError(f"--config {path}: unknown option(s) {unknown}")
    if "config" in names.values():
        raise ValueError(f"--config {path}: a config file cannot name another config")
    values: dict[str, Any] = {}
    for key, value in loaded.items():
        name = names[str(key)]
        if name in values:  # batch-size and batch_size both given: which one wins would be silent
            raise ValueError(f"--config {path}: {key}: option given twice")
        values[name] = _coerce(fields[name], value, f"--config {path}: {key}")
    return values


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _to_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):  # bool is an int subclass: true is not 1
        raise TypeError
    return int(v)


def _to_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):  # str: PyYAML reads 1e-3 (no dot) as one
        raise TypeError
    return float(v)


def _to_str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError
    return v


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in _BOOL_WORDS:  # a quoted "false" is a non-empty, truthy string
        return _BOOL_WORDS[v.lower()]
    raise ValueError


def _to_float_list(v: Any) -> list[float]:
    items = v if isinstance(v, list) else [v]
    return [_to_float(i) for i in items]


def _to_str_list(v: Any) -> list[str]:
    items = [v] if isinstance(v, str) else v  # a lone string would otherwise be iterated character by character
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise TypeError
    return list(items)


# field type (without Optional[]) -> (converter, what the message says was expected)
_KINDS = {"int": (_to_int, "an integer"), "float": (_to_float, "a number"), "str": (_to_str, "a string"),
          "bool": (_to_bool, "true or false"), "list[str]": (_to_str_list, "a string or a list of strings"),
          "list[float]": (_to_float_list, "a number or a list of numbers")}


def _coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    """``value`` from a YAML file as field ``f``'s type; ValueError saying what was expected and what came."""
    kind = str(f.type)
    optional = kind.startswith("Optional[") or f.default is None
    kind = kind[len("Optional["):-1] if kind.startswith("Optional[") else kind
    convert, expected = _KINDS[kind]
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: expected {expected}, got null")
    if f.name == "compile" and isinstance(value, bool):  # YAML 1.1 reads an unquoted on/off as true/false
        value = "on" if value else "off"
    try:
        out = convert(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected {expected}, got {value!r} ({type(value).__name__})") from None
    choices = f.metadata.get("choices")
    if choices and out not in choices:
        raise ValueError(f"{where}: expected one of {', '.join(choices)}, got {out!r}")
    return out


MAX_LR = 10.0  # AdamW diverges at the first step far below this; above float32's range it cannot even store it


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(cfg: TrainConfig) -> None:
    """Every option in its range; a ``UsageError`` naming the option, the range and the value, before anything
    heavy starts."""
    for name in ("epochs", "batch_size", "checkpoint_every", "output_stride"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"{_flag(name)} must be >= 1, got {getattr(cfg, name)}")
    for name in ("seed",):  # numpy rejects a negative seed only later, and less clearly
        if getattr(cfg, name) < 0:
            raise UsageError(f"{_flag(name)} must be >= 0, got {getattr(cfg, name)}")
    if cfg.seed > MAX_SEED:  # torch and DALI take a 64-bit seed
        raise UsageError(f"--seed must be in [0, 2**63 - 1], got {cfg.seed}")
    if not 8 <= cfg.image_size <= MAX_IMAGE_SIZE:  # the loaders' smallest crop; a larger one cannot be allocated
        raise UsageError(f"--image-size: expected a crop side of 8..{MAX_IMAGE_SIZE} pixels, got {cfg.image_size}")
    if cfg.workers is not None and not 1 <= cfg.workers <= MAX_WORKERS:  # DALI aborts on 100,000 threads
        raise UsageError(f"--workers: expected 1..{MAX_WORKERS} decode threads, got {cfg.workers}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1, got {cfg.max_steps}")
    for f in dataclasses.fields(TrainConfig):  # --lr inf would train until the NaN guard stops it
        value = getattr(cfg, f.name)
        values = value if isinstance(value, list) and "float" in str(f.type) else [value]
        if "float" in str(f.type) and any(v is not None and not math.isfinite(v) for v in values):
            raise UsageError(f"{_flag(f.name)} must be finite, got {value}")
    for name in ("lr", "lambda_point", "lambda_heat", "weight_decay"):
        if not getattr(cfg, name) >= 0:
            raise UsageError(f"{_flag(name)} must be >= 0, got {getattr(cfg, name)}")
    if cfg.lr > MAX_LR:
        raise UsageError(f"--lr: expected a learning rate in [0, {MAX_LR:g}], got {cfg.lr:g}")
    if cfg.lr * cfg.weight_decay > 1:  # AdamW scales the weights by 1 - lr * wd each step: below 0 they flip sign
        raise UsageError(f"--weight-decay: expected at most {1 / cfg.lr:g} with --lr {cfg.lr:g} (AdamW multiplies "
                         f"the weights by 1 - lr * weight_decay each step, which must not go below 0), got "
                         f"{cfg.weight_decay:g}")
    if not cfg.heat_sigma > 0:  # the rasteriser rejects a zero-width splat, but only at the first step
        raise UsageError(f"--heat-sigma must be > 0, got {cfg.heat_sigma}")
    if cfg.heat_sigma > cfg.image_size:  # no heat map is wider than the crop: the target would be flat
        raise UsageError(f"--heat-sigma: expected a splat width in (0, {cfg.image_size}] heat-map cells (at most "
                         f"--image-size {cfg.image_size}: a wider splat makes every heat target flat), got "
                         f"{cfg.heat_sigma:g}")
    if not 0 < cfg.crop_scale <= 1:
        raise UsageError(f"--crop-scale must be in (0, 1], got {cfg.crop_scale}")
    if not 0 <= cfg.label_smoothing < 1:
        raise UsageError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {cfg.device!r}")
    validate_training(cfg)
    validate_mixing(cfg)
    validate_augment(cfg)
    validate_checkpoints(cfg)
    from .summary_logs import require  # --log-tensorboard / --log-wandb: their package importable

    require(cfg)
    if not cfg.out.strip():  # an empty run directory is the current one, which would fill with run files
        raise UsageError(f"--out must not be empty, got {cfg.out!r}")


def validate_mixing(cfg: TrainConfig) -> None:
    """CutMix / Mixup (data/mixing.py): alphas, probabilities, the box range, and what mixing needs."""
    for name in ("mixup", "cutmix"):
        _in(name, cfg, 0, math.inf)
    for name in ("mixup_prob", "mixup_switch_prob"):
        _in(name, cfg, 0, 1, "[]")
    on = cfg.mixup > 0 or cfg.cutmix > 0 or cfg.cutmix_minmax is not None
    if cfg.cutmix_minmax is not None:
        lo, hi = cfg.cutmix_minmax
        if not (0 <= lo < hi <= 1 and int(cfg.image_size * lo) < int(cfg.image_size * hi)):
            raise UsageError(f"--cutmix-minmax: expected min < max in [0, 1], at least one pixel apart at "
                             f"--image-size {cfg.image_size}, got {lo:g} {hi:g}")
    if cfg.mixup_off_epoch < 0 or (on and cfg.mixup_off_epoch >= cfg.epochs):
        raise UsageError(f"--mixup-off-epoch: expected 0 <= N < --epochs {cfg.epochs} (mixing is off in the last N "
                         f"epochs), got {cfg.mixup_off_epoch}")
    if on and cfg.batch_size % 2:  # timm's Mixup asserts it: the middle sample would be its own partner
        raise UsageError(f"--batch-size: --mixup / --cutmix pair sample i with B - 1 - i, expected an even batch "
                         f"size, got {cfg.batch_size}")
    if cfg.cutmix_relabel == "region" and not (cfg.label_maps and (cfg.cutmix > 0 or cfg.cutmix_minmax)):
        raise UsageError("--cutmix-relabel region pools --label-maps over the regions CutMix pastes: give "
                         "--label-maps and --cutmix (or --cutmix-minmax)")


def validate_augment(cfg: TrainConfig) -> None:
    """--aa (parsed by timm), the random erasing and jitter values, --ratio."""
    from ..data.augment import build_augment

    build_augment(cfg.image_size, cfg.aa, cfg.color_jitter, cfg.reprob, cfg.remode, cfg.recount, cfg.interpolation)
    if cfg.ratio is not None and not 0 < cfg.ratio[0] <= cfg.ratio[1] < math.inf:
        raise UsageError(f"--ratio: expected two aspect ratios 0 < min <= max, got {cfg.ratio[0]:g} {cfg.ratio[1]:g}")


def validate_checkpoints(cfg: TrainConfig) -> None:
    """The starting-point and checkpoint options (issue 20): ranges and the combinations that cannot work."""
    if cfg.checkpoint_hist is not None and cfg.checkpoint_hist < 1:
        raise UsageError(f"--checkpoint-hist: expected a number of checkpoints to keep >= 1 (leave it out to keep "
                         f"last.pt only), got {cfg.checkpoint_hist}")
    if cfg.pretrained_file and not cfg.pretrained:
        raise UsageError(f"--pretrained-file {cfg.pretrained_file}: give --pretrained too (timm's pretrained "
                         f"weights, read from this file)")
    if cfg.pretrained and cfg.pretrained_path:
        raise UsageError(f"--pretrained and --pretrained-path {cfg.pretrained_path}: give one starting point")
    if cfg.ema and not cfg.eval_only:
        raise UsageError("--ema picks the EMA weights of an --eval-only checkpoint; to train with an EMA, give "
                         "--model-ema")
    if cfg.eval_only is not None:
        if not cfg.val_data:
            raise UsageError(f"--eval-only {cfg.eval_only}: give the splits to evaluate on, --val-data NAME=DIR")
        if cfg.resume:
            raise UsageError(f"--eval-only {cfg.eval_only} and --resume: --eval-only trains nothing")


MAX_ACCUM = 1024  # batches per optimiser step; beyond it an epoch of most data sets is a single step


def _in(name: str, cfg: TrainConfig, lo: float, hi: float, closed: str = "[)") -> None:
    """``--name`` in the interval ``lo..hi`` (``closed``: which ends belong to it), else a UsageError."""
    v = getattr(cfg, name)
    if v is None:
        return
    ok = (lo <= v if closed[0] == "[" else lo < v) and (v <= hi if closed[1] == "]" else v < hi)
    if not ok:
        raise UsageError(f"{_flag(name)} must be in {closed[0]}{lo:g}, {hi:g}{closed[1]}, got {v:g}")


def validate_training(cfg: TrainConfig) -> None:
    """The optimiser, schedule, EMA, clipping, accumulation and model options (train/optim.py uses them)."""
    from timm.optim import list_optimizers

    known = set(list_optimizers(with_description=False)) | {"sgd", "nesterov", "momentum"}
    if cfg.opt.lower() not in known:
        raise UsageError(f"--opt: expected an optimiser timm knows (sgd, nesterov, adamw, adamp, lamb, lars, ...: "
                         f"timm.optim.list_optimizers()), got {cfg.opt!r}")
    for name, lo, hi, closed in (("momentum", 0, 1, "[)"), ("opt_eps", 0, 1, "(]"), ("layer_decay", 0, 1, "(]"),
                                 ("model_ema_decay", 0, 1, "[)"), ("drop", 0, 1, "[)"), ("drop_path", 0, 1, "[)"),
                                 ("warmup_lr", 0, MAX_LR, "[]"), ("min_lr", 0, MAX_LR, "[]"),
                                 ("clip_grad", 0, math.inf, "()"), ("decay_rate", 0, math.inf, "()"),
                                 ("decay_epochs", 0, math.inf, "()"), ("warmup_epochs", 0, math.inf, "[)"),
                                 ("cooldown_epochs", 0, math.inf, "[)")):
        _in(name, cfg, lo, hi, closed)
    if cfg.opt_betas is not None and not all(0 <= b < 1 for b in cfg.opt_betas):
        raise UsageError(f"--opt-betas: expected two numbers in [0, 1), got {' '.join(map(str, cfg.opt_betas))}")
    if cfg.warmup_steps is not None and cfg.warmup_steps < 0:
        raise UsageError(f"--warmup-steps must be >= 0, got {cfg.warmup_steps}")
    if cfg.warmup_steps is not None and cfg.warmup_epochs > 0:
        raise UsageError(f"--warmup-steps {cfg.warmup_steps} and --warmup-epochs {cfg.warmup_epochs:g}: give one "
                         f"warm-up length")
    if cfg.sched == "plateau" and cfg.warmup_steps:  # timm's plateau schedule counts everything in epochs
        raise UsageError("--warmup-steps: --sched plateau steps per epoch; give --warmup-epochs instead")
    if cfg.decay_milestones is not None and (any(m < 0 for m in cfg.decay_milestones)
                                             or sorted(cfg.decay_milestones) != cfg.decay_milestones):
        raise UsageError(f"--decay-milestones: expected increasing epochs >= 0, got "
                         f"{' '.join(f'{m:g}' for m in cfg.decay_milestones)}")
    if not 1 <= cfg.grad_accum_steps <= MAX_ACCUM:
        raise UsageError(f"--grad-accum-steps must be in [1, {MAX_ACCUM}], got {cfg.grad_accum_steps}")
    model_kwargs(cfg)


def model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """``--model-kwargs k=v ...`` as a dict, each value read as a YAML scalar (``0.5``, ``true``, ``silu``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in cfg.model_kwargs or []:
        key, eq, text = item.partition("=")
        if not eq or not key.isidentifier():
            raise UsageError(f"--model-kwargs: expected name=value, got {item!r}")
        if key in out:
            raise UsageError(f"--model-kwargs: {key} given twice")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        if isinstance(value, (dict, list)):  # a scalar only: "a: b" would otherwise become a dict
            raise UsageError(f"--model-kwargs {item!r}: expected a single value (number, true/false, name)")
        out[key] = value
    return out
