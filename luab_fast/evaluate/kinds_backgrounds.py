"""The Backgrounds Challenge / ImageNet-9 (Xiao et al., "Noise or Signal: The Role of Image Backgrounds in Object
Recognition", ICLR 2021; code and data: MadryLab/backgrounds_challenge).

Layout (the release's ``bg_challenge`` archive): ``ROOT/<variation>/val/<class folder>/<image>``, variations
``VARIATIONS``, 9 class folders per variation whose sorted order is the IN-9 class index (``in9_classes.txt``:
dog, bird, wheeled vehicle, reptile, carnivore, insect, musical instrument, primate, fish). The images are
224 × 224 and are scored as they are (their ``ImageNet9`` dataset's test transform is ``ToTensor`` alone).

Protocol (``in9_eval.py`` → ``tools/model_utils.py``, ``eval_model`` with ``map_in_to_in9=True``): a 1,000-class
model's top-1 ImageNet class is mapped through the repository's ``in_to_in9.json`` ({ImageNet index: IN-9 class
or -1}; an ImageNet class outside the 9 is -1, never right); accuracy = mapped prediction == label. The file is
not in the data archive: pass the path of the repository's copy. BG-Gap = accuracy on ``mixed_same`` − accuracy
on ``mixed_rand`` (their README's results table): how much a right foreground's recognition depends on its
background.

How to call::

    in_to_in9 = read_in_to_in9(PATH_TO/in_to_in9.json)     # int64 [1000]
    files, labels = read_in9(ROOT, "mixed_same")            # labels: IN-9 class 0..8 per file
    metrics = in9_accuracy(logits, labels, in_to_in9)       # logits [N, 1000], ImageNet-1k (sorted-wnid) order
    # -> {"top1": fraction in [0, 1], "n": images};  bg_gap(same["top1"], rand["top1"]) -> fraction
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._cli import DataError
from ._kind_files import as_index, as_scores, images_in, read_json, subfolders

VARIATIONS = ("original", "only_fg", "no_fg", "only_bg_b", "only_bg_t", "mixed_same", "mixed_rand", "mixed_next")
IN9_CLASSES = 9
IMAGENET_CLASSES = 1000


def read_in9(root: str | Path, variation: str) -> tuple[list[str], np.ndarray]:
    """(files, IN-9 label per file) of ``root/<variation>/val``; DataError naming the folder unless it holds
    exactly 9 class folders, each with images."""
    if variation not in VARIATIONS:
        raise ValueError(f"variation must be one of {VARIATIONS}, got {variation!r}")
    val = Path(root) / variation / "val"
    if not val.is_dir():
        raise DataError(f"backgrounds: {val} is missing (expected {Path(root)}/<variation>/val/<class>/<image>)")
    classes = subfolders(val)
    if len(classes) != IN9_CLASSES:
        raise DataError(f"backgrounds: {val} must hold the 9 IN-9 class folders, found {len(classes)}: "
                        f"{[d.name for d in classes][:12]}")
    files: list[str] = []
    labels: list[int] = []
    for k, d in enumerate(classes):
        found = images_in(d)
        if not found:
            raise DataError(f"backgrounds: class folder {d} holds no images")
        files += found
        labels += [k] * len(found)
    return files, np.asarray(labels, np.int64)


def read_in_to_in9(path: str | Path) -> np.ndarray:
    """The repository's ``in_to_in9.json`` as int64 [1000] (-1: no IN-9 class); DataError naming the file
    unless it maps every ImageNet index 0..999 to -1..8."""
    path = Path(path)
    table = read_json(path, "backgrounds")
    keys = {str(k) for k in range(IMAGENET_CLASSES)}
    if not isinstance(table, dict) or set(table) != keys:
        raise DataError(f"backgrounds: {path} must map every ImageNet index '0'..'999' to an IN-9 class, got "
                        f"{len(table) if isinstance(table, dict) else type(table).__name__} entries")
    out = np.asarray([table[str(k)] for k in range(IMAGENET_CLASSES)])
    if out.dtype.kind != "i" or out.min() < -1 or out.max() >= IN9_CLASSES:
        raise DataError(f"backgrounds: {path} values must be integers -1..8, got {sorted(set(out.tolist()))[:12]}")
    return out.astype(np.int64)


def in9_accuracy(logits: Any, labels: Any, in_to_in9: Any) -> dict[str, Any]:
    """{"top1", "n"}: the share of images whose top-1 ImageNet class maps to their IN-9 label."""
    scores = as_scores(logits, "logits", IMAGENET_CLASSES)
    labels = as_index(labels, "labels", len(scores))
    mapping = as_index(in_to_in9, "in_to_in9", IMAGENET_CLASSES)
    if not len(scores):
        raise ValueError("logits has no rows: nothing to score")
    if labels.min() < 0 or labels.max() >= IN9_CLASSES:
        raise ValueError(f"labels must be IN-9 classes 0..8, got {labels.min()}..{labels.max()}")
    return {"top1": float((mapping[scores.argmax(1)] == labels).mean()), "n": int(len(labels))}


def bg_gap(mixed_same_top1: float, mixed_rand_top1: float) -> float:
    """BG-Gap: accuracy on Mixed-Same minus accuracy on Mixed-Rand (fractions)."""
    return float(mixed_same_top1) - float(mixed_rand_top1)
