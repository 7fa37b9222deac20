"""The models ``python -m luab_fast.evaluate`` scores, each with its classes (wnids, in output order):

- this trainer's checkpoints (``last.pt``, ``checkpoint-<epoch>.pt``, ``model_best.pt``): rebuilt with the
  settings saved in them (train/eval_only.py), raw or EMA weights, classes saved beside the weights;
- a timm model by name with a local weights file (a released ReLabel or timm checkpoint): its classes from
  ``--class-map`` (one wnid a line, in class-index order), else timm's ImageNet-1k list for a 1,000-class head.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .._cli import DataError, UsageError
from .._digest import file_sha256


@dataclass
class Scored:
    label: str  # its name in the tables
    module: nn.Module
    classes: tuple[str, ...]
    image_size: int  # the crop side it is scored at
    info: dict  # model, checkpoint, sha256, weights: written to results.json


def read_class_map(path: Path) -> tuple[str, ...]:
    """One wnid a line, line k naming class k."""
    if not path.is_file():
        raise UsageError(f"--class-map {path} " + ("is a folder, expected a file" if path.exists()
                                                   else "does not exist"))
    try:
        wnids = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise DataError(f"--class-map {path}: not a text file of wnids") from None
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"--class-map {path}: expected one distinct wnid per line (line k names class k), got "
                        f"{len(wnids)} lines, {len(set(wnids))} distinct")
    return tuple(wnids)


def from_checkpoint(path: Path, ema: bool, image_size: Optional[int], class_map: Optional[Path]) -> Scored:
    """This trainer's checkpoint, its model rebuilt as it was trained."""
    from ..train import eval_only
    from ..train.config import TrainConfig

    saved = eval_only._read(path, "--checkpoint")
    if not eval_only._is_trainer_checkpoint(saved, "--checkpoint"):
        raise DataError(f"--checkpoint {path}: not a checkpoint of python -m luab_fast.train (for a timm model's "
                        f"weights give --model NAME --pretrained-path {path})")
    run = saved.get("run", {})
    cfg = dataclasses.replace(TrainConfig(), **{k: run[k] for k in eval_only._ARCH if k in run}, ema=ema)
    if class_map is not None:
        classes = read_class_map(class_map)
    elif isinstance(saved.get("classes"), list):
        classes = tuple(map(str, saved["classes"]))
    else:
        raise DataError(f"--checkpoint {path}: holds no class names (an older checkpoint); give --class-map FILE, "
                        f"the training classes one a line")
    name = eval_only._name(saved, path)
    model = eval_only._build(cfg, saved, path, name, classes, True, "--checkpoint")
    info = {"model": f"{cfg.model} ({name})", "checkpoint": str(path), "sha256": file_sha256(path),
            "weights": "ema" if ema else "model", "steps": saved["state"].get("step")}
    label = f"{path.parent.name}/{path.stem}" + (" (EMA)" if ema else "")
    return Scored(label, model, classes, image_size or cfg.image_size, info)


def from_timm(name: str, weights: Path, image_size: Optional[int], class_map: Optional[Path]) -> Scored:
    """timm.create_model(name) with the weights of a local file (its classifier included)."""
    import timm

    from ..train.model import read_state_dict

    if not weights.is_file():
        raise UsageError(f"--pretrained-path {weights} " + ("is a folder, expected a weights file" if weights.exists()
                                                            else "does not exist"))
    state = read_state_dict(str(weights), "--pretrained-path")
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise UsageError(f"--model {name}: {exc}") from None
    n_out = model.get_classifier().out_features if hasattr(model.get_classifier(), "out_features") else None
    classes = read_class_map(class_map) if class_map else None
    if classes is not None and n_out != len(classes):
        model.reset_classifier(len(classes))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = "; ".join(ln.strip() for ln in str(exc).splitlines()[1:3])
        raise DataError(f"--pretrained-path {weights} does not fit timm's {name}"
                        + (f" with {len(classes)} classes (--class-map)" if classes else "") + f": {detail}") from None
    if classes is None:
        from .kinds import imagenet_wnids

        out = model.get_classifier().out_features
        if out != 1000:
            raise UsageError(f"--model {name}: its classifier has {out} outputs; give --class-map FILE (one wnid a "
                             f"line, in class-index order) to say which classes they are")
        classes = imagenet_wnids()
    size = image_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    info = {"model": name, "checkpoint": str(weights), "sha256": file_sha256(weights), "weights": "model"}
    return Scored(f"{name} ({weights.name})", model, classes, size, info)


def prepare(scored: Scored, device: torch.device) -> Scored:
    """On ``device``; channels_last on CUDA (the loader's layout there)."""
    scored.module = scored.module.to(device).eval()
    if device.type == "cuda":
        scored.module = scored.module.to(memory_format=torch.channels_last)
    return scored
