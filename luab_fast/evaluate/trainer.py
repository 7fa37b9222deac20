"""The trainer's ``--val-data NAME=KIND:PATH``: the split read and scored by its kind, as
``python -m luab_fast.evaluate`` does (one evaluation code path: each split decoded with its kind's own crop,
``Kind.crop``, and the loader's bilinear resize, the command's defaults); the bare ``NAME=PATH`` keeps the
trainer's own class-name matching (train/inputs.py), metrics (train/evaluate.py) and 87.5% centre crop."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..data.loader import Loader
from . import runner
from .kinds import REGISTRY, Options, Split
from .splits import parse_split


@dataclass(frozen=True)
class KindLoader:
    """A split of a kind and its loader: what the trainer's ``evaluate`` scores through the kind."""

    split: Split
    loader: Loader
    num_classes: int

    def __len__(self) -> int:
        return len(self.loader)


def split_kinds(cfg: Any) -> tuple[Any, dict[str, str]]:
    """``cfg`` with each ``NAME=KIND:PATH`` of ``--val-data`` written ``NAME=PATH`` (the form the trainer's
    split reader takes), and {name: kind}."""
    plain, kinds = [], {}
    for item in cfg.val_data or []:
        rest = item.partition("=")[2] or item
        if rest.partition(":")[0] in REGISTRY and ":" in rest:
            name, kind, path = parse_split(item, "--val-data")
            kinds[name] = kind
            plain.append(f"{name}={path}")
        else:
            plain.append(item)
    return (dataclasses.replace(cfg, val_data=plain) if kinds else cfg), kinds


def kind_loader(path, name: str, kind: str, classes: tuple[str, ...], cfg: Any, device: torch.device) -> KindLoader:
    split = REGISTRY[kind].read(path, classes, Options(), name)
    settings = runner.LoaderSettings(cfg.batch_size, cfg.image_size, cfg.backend, cfg.workers)
    return KindLoader(split, runner.split_loader(split, device, settings), len(classes))


def evaluate_kind(model: torch.nn.Module, loader: KindLoader) -> dict[str, Any]:
    """The kind's metrics, with ``images`` as the trainer's reports name the count."""
    out = runner.score(model, loader.split, loader.loader, loader.num_classes)
    return {**out, "images": out["n"], "kind": loader.split.kind}
