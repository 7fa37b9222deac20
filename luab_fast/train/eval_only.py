"""``python -m luab_fast.train --eval-only CHECKPOINT --val-data NAME=DIR ...``: a checkpoint scored on every
evaluation split without training, into ``<out>/metrics.json`` in the format a training run writes.

CHECKPOINT is this trainer's ``last.pt`` or a ``--checkpoint-hist`` file (``checkpoint-<epoch>.pt``,
``model_best.pt``): the model is rebuilt with the settings saved in it (backbone, image size, output stride, the
pooling of the model it holds), so the scores equal those the training run wrote for the same weights; ``--ema``
scores its EMA weights (``<split>_ema`` in metrics.json, as training names them). Or a plain state dict: a whole
timm model's of ``--model`` (its classifier must fit the classes) or a ``LUABModel``'s, built from the options."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import torch

from .. import _atomic
from .._cli import DataError, UsageError
from ..data.source import list_images
from ..evaluate.trainer import split_kinds
from . import checkpoint as ckpt
from .config import TrainConfig, model_kwargs
from .inputs import _val_splits, store_boxes
from .model import LUABModel, classifier_fits, load_backbone, load_classifier

# the settings of a trainer checkpoint that build its model and its evaluation crops
_ARCH = ("model", "output_stride", "image_size", "pool", "baseline_pool", "model_kwargs")


def eval_only(cfg: TrainConfig) -> int:
    from .run import _device, _run_dir, eval_loaders, evaluate_splits

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would evaluate the same splits and write one file
        raise UsageError(f"--eval-only runs in one process, got WORLD_SIZE={os.environ['WORLD_SIZE']} (torchrun); "
                         "run python -m luab_fast.train --eval-only ... without torchrun")
    path = Path(cfg.eval_only)
    saved = _read(path)
    trainer = _is_trainer_checkpoint(saved)
    if trainer:  # its own settings build the model and the crops, whatever the options say
        run = saved.get("run", {})
        cfg = dataclasses.replace(cfg, **{k: run[k] for k in _ARCH if k in run})
    elif cfg.ema:
        raise UsageError(f"--ema: --eval-only {path} is a plain state dict, which holds no EMA weights (a "
                         f"checkpoint of a --model-ema run does)")
    val = _val_splits(split_kinds(cfg)[0], {})  # NAME=KIND:PATH: the path here, the kind in eval_loaders
    classes = _classes(cfg, saved if trainer else None, val)
    device = _device(cfg, 0)
    name = _name(saved, path) if trainer else "baseline"
    model = _build(cfg, saved, path, name, classes, trainer).to(device)
    if device.type == "cuda":  # as training evaluated it: the same kernels, the same numbers
        model = model.to(memory_format=torch.channels_last)
    _keep_training_metrics(Path(cfg.out))
    run_dir = _run_dir(cfg)
    boxes = store_boxes(cfg.byproducts) if cfg.byproducts and name == "luab" else None
    evals = eval_loaders(val, classes, cfg, device)
    scores = evaluate_splits(model, evals, len(classes), boxes or None)
    if cfg.ema:
        scores = {f"{split}_ema": v for split, v in scores.items()}
    entry: dict[str, Any] = {"checkpoint": str(path), "weights": "ema" if cfg.ema else "model", "eval": scores}
    if trainer:
        entry["steps"] = saved["state"].get("step")
    metrics = {"config": vars(cfg), "device": str(device), "world_size": 1, "models": {name: entry}}
    _atomic.write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    for split, ev in scores.items():
        print(f"{name} {split}: top-1 {100 * ev['top1']:.2f}%, top-5 {100 * ev['top5']:.2f}% of {ev['images']:,} "
              f"images", flush=True)
    print(f"run directory: {run_dir} (metrics.json)", flush=True)
    return 0


def _keep_training_metrics(out: Path) -> None:
    """A training run's metrics.json in --out is not replaced by an evaluation's (its entries have no
    ``checkpoint``): e.g. --eval-only runs/x/luab/last.pt --out runs/x."""
    try:
        models = json.loads((out / "metrics.json").read_text())["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if isinstance(models, dict) and any(isinstance(m, dict) and "checkpoint" not in m for m in models.values()):
        raise UsageError(f"--out {out} holds a training run's metrics.json, which --eval-only would replace; give "
                         f"another --out")


def _read(path: Path, option: str = "--eval-only") -> Any:
    if not path.is_file():
        raise ValueError(f"{option} {path} " + ("is a directory, expected a checkpoint file" if path.exists()
                                                   else "does not exist"))
    if path.suffix == ".safetensors":
        return None  # a plain state dict: model.read_state_dict reads it
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # never runs code from the file
    except OSError:
        raise
    except Exception as exc:  # pickle, zip errors, an empty file: not a checkpoint
        raise DataError(f"{option} {path}: cannot read it as a checkpoint or weights ({ckpt.describe(exc)})"
                        ) from None


def _is_trainer_checkpoint(saved: Any, option: str = "--eval-only") -> bool:
    if not isinstance(saved, dict) or not all(k in saved for k in ckpt.KEYS):
        return False
    problem = ckpt.structure_problem(saved)
    if problem:
        raise DataError(f"{option}: the checkpoint holds {problem}, expected a checkpoint of python -m "
                        f"luab_fast.train")
    return True


def _name(saved: dict[str, Any], path: Path) -> str:
    """Which of a run's models the checkpoint holds: saved with it, else the folder it is in."""
    name = saved.get("trainer") or path.parent.name
    return name if name in ("baseline", "luab") else "baseline"


def _classes(cfg: TrainConfig, saved: Optional[dict[str, Any]], val: dict[str, Path]) -> tuple[str, ...]:
    """The training classes: saved in the checkpoint, else those of --data, else the first split's own."""
    if saved is not None and isinstance(saved.get("classes"), list):
        return tuple(saved["classes"])
    if cfg.data:
        if not Path(cfg.data).exists():
            raise ValueError(f"--data {cfg.data} does not exist")
        return list_images(Path(cfg.data)).classes
    split, first = next(iter(val.items()))
    return list_images(first, min_classes=1).classes


def _build(cfg: TrainConfig, saved: Any, path: Path, name: str, classes: tuple[str, ...],
           trainer: bool, option: str = "--eval-only") -> LUABModel:
    """The model of ``saved`` (``option``: the argument that named the file, for the errors)."""
    kwargs = model_kwargs(SimpleNamespace(model_kwargs=cfg.model_kwargs))
    pool = cfg.pool if name == "luab" else cfg.baseline_pool
    model = LUABModel(cfg.model, len(classes), cfg.output_stride, None, pool, cfg.image_size,
                      model_kwargs=kwargs)
    if trainer:
        part = "ema" if cfg.ema else "model"
        if part not in saved:
            raise DataError(f"--ema: {path} holds no EMA weights (its run was trained without --model-ema); leave "
                            f"--ema out to score its weights")
        if not isinstance(saved[part], dict) or not all(isinstance(v, torch.Tensor) for v in saved[part].values()):
            raise DataError(f"{option} {path}: its {part!r} entry is not a state dict")
        _load_strict(model, saved[part], path, len(classes), option)
        return model
    state = saved if isinstance(saved, dict) else None
    if state is not None and sum(str(k).startswith("backbone.") for k in state) > len(state) // 2:
        _load_strict(model, state, path, len(classes))  # a LUABModel's own state dict
        return model
    head = load_backbone(model.backbone, str(path), "--eval-only")  # a timm model's: backbone + classifier
    if head is None or not classifier_fits(model.classifier, head):
        got = f"{head['name']}.weight {tuple(head['weight'].shape)}" if head else "no classifier"
        raise DataError(f"--eval-only {path}: holds {got}, expected a classifier for the {len(classes)} classes "
                        f"(a [{len(classes)}, {model.classifier.in_features}] weight): there is nothing to score")
    load_classifier(model.classifier, head, f"--eval-only {path}")
    return model


def _load_strict(model: LUABModel, state: dict[str, torch.Tensor], path: Path, num_classes: int,
                 option: str = "--eval-only") -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = [ln.strip() for ln in str(exc).splitlines()[1:3]]
        raise DataError(f"{option} {path} does not fit {model.backbone.__class__.__name__} with "
                        f"{num_classes} classes (--model, --data / the splits' classes): {'; '.join(detail)}"
                        ) from None
