"""File and array checks the pure kind modules (ObjectNet, ImageNet-C, -O, the Backgrounds Challenge) share.

Every reader fails with a ``DataError`` naming the file or folder, what was expected and what came; every metric
function refuses arrays of the wrong shape with a ``ValueError`` naming the argument.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._cli import DataError
from ..data.source import IMAGE_SUFFIXES


def images_in(folder: Path) -> list[str]:
    """The image files directly in ``folder``, sorted by name (torchvision ImageFolder's order)."""
    return sorted(str(f) for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def subfolders(folder: Path) -> list[Path]:
    """The visible subfolders of ``folder``, sorted by name."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def class_folders(root: Path, what: str) -> tuple[list[str], list[str]]:
    """(files, wnid per file) of a ``root/<wnid>/<image>`` folder; a DataError naming ``root`` if it holds no
    class folder with images."""
    if not root.is_dir():
        raise DataError(f"{what}: {root} is not a folder (expected {root}/<wnid>/<image>)")
    files: list[str] = []
    wnids: list[str] = []
    for d in subfolders(root):
        found = images_in(d)
        files += found
        wnids += [d.name] * len(found)
    if not files:
        raise DataError(f"{what}: {root} holds no images in class folders (expected {root}/<wnid>/<image>)")
    return files, wnids


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of ``path``; a DataError naming it when it is missing or not JSON."""
    if not path.is_file():
        raise DataError(f"{what}: {path} is missing (expected a JSON file)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{what}: {path} is not valid JSON ({exc})") from None


def as_scores(x: Any, name: str, columns: int | None = None) -> np.ndarray:
    """``x`` (numpy or torch) as float64 [N, C]; a ValueError naming ``name`` otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_:
        raise ValueError(f"{name} must be a numeric [N, C] array, got shape {a.shape} {a.dtype}")
    if columns is not None and a.shape[1] != columns:
        raise ValueError(f"{name} must have {columns} columns (one per class), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return a.astype(np.float64, copy=False)


def as_index(x: Any, name: str, n: int) -> np.ndarray:
    """``x`` as int64 [n]; a ValueError naming ``name`` otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be integer [{n}], got shape {a.shape} {a.dtype}")
    return a.astype(np.int64, copy=False)
