"""The ILSVRC-2012 validation images by file number, and the label files keyed by it.

The 50,000 validation images are ``ILSVRC2012_val_<8-digit number>.JPEG``, flat in one folder (as released) or
sorted into wnid folders (after the usual ``valprep.sh``); the number is what every label file below is keyed
by (sources in docs/evaluation.md):

- Kaggle's ``LOC_val_solution.csv``: ``ImageId,PredictionString``, the string ``wnid x0 y0 x1 y1`` per box;
  every box of a validation image carries the image's class.
- the devkit's ``data/ILSVRC2012_validation_ground_truth.txt``: line n is the ILSVRC2012_ID of image n; the ids
  1..1000 follow the devkit's own order (``data/meta.mat``), not the sorted-wnid order models use.
- ReaL's ``real.json`` (google-research/reassessed-imagenet): 50,000 lists of class indices in sorted-wnid order,
  list n-1 for image n; an empty list is an image without a reassessed label.
- the multi-label annotations of Shankar et al. 2020 (modestyachts/evaluating_machine_accuracy_on_imagenet):
  per image id the wnids judged ``correct``, and whether the image is ``problematic``.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Optional

import numpy as np

from .._cli import DataError
from ..data.source import IMAGE_SUFFIXES

N_VAL = 50_000
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})$")


def val_number(file: str) -> Optional[int]:
    """The validation image number of a file named ILSVRC2012_val_<8 digits>.<image suffix>, else None."""
    p = Path(file)
    m = _VAL_NAME.match(p.stem) if p.suffix.lower() in IMAGE_SUFFIXES else None
    return int(m.group(1)) if m and 1 <= int(m.group(1)) <= N_VAL else None


def val_files(folder: Path, option: str) -> tuple[list[str], np.ndarray]:
    """The validation images in ``folder`` or one level of class folders below it, by number; their numbers."""
    if not folder.is_dir():
        raise DataError(f"{option} {folder}: expected a folder of ILSVRC2012_val_<number>.JPEG images, "
                        + ("got a file" if folder.exists() else "it does not exist"))
    found = {}
    for f in list(folder.iterdir()) + [g for d in folder.iterdir() if d.is_dir() for g in d.iterdir()]:
        n = val_number(f.name)
        if n is not None and f.is_file():
            if n in found:
                raise DataError(f"{option} {folder}: validation image {n} is there twice ({found[n]} and {f})")
            found[n] = str(f)
    if not found:
        raise DataError(f"{option} {folder}: holds no ILSVRC2012_val_<8-digit number>.JPEG images (flat or in "
                        f"class folders)")
    numbers = np.asarray(sorted(found), np.int64)
    return [found[int(n)] for n in numbers], numbers


def read_loc_solution(path: Path) -> dict[int, str]:
    """Image number → wnid from Kaggle's LOC_val_solution.csv."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    if list(df.columns[:2]) != ["ImageId", "PredictionString"]:
        raise DataError(f"{path}: expected Kaggle's columns ImageId,PredictionString, got {list(df.columns)}")
    out = {}
    for image, boxes in zip(df["ImageId"], df["PredictionString"].fillna("")):
        n, wnid = val_number(f"{image}.JPEG"), boxes.split()[:1]
        if n is None or not wnid or not re.fullmatch(r"n\d{8}", wnid[0]):
            raise DataError(f"{path}: row {image!r} is not ILSVRC2012_val_<number> with 'wnid x0 y0 x1 y1 ...' "
                            f"boxes (got {boxes[:60]!r})")
        out[n] = wnid[0]
    return out


def read_devkit(path: Path) -> dict[int, str]:
    """Image number → wnid from the devkit's ground truth, its ILSVRC2012_IDs translated by ``meta.mat`` beside it
    (read with scipy, the only reader of MATLAB files the field uses)."""
    meta = path.parent / "meta.mat"
    if not meta.is_file():
        raise DataError(f"{path}: the devkit's class ids need its meta.mat beside it ({meta} does not exist): the "
                        f"ids 1..1000 follow the devkit's own order, not the sorted wnids")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"{path}: reading the devkit's {meta} needs scipy (pip install scipy), or give Kaggle's "
                        f"LOC_val_solution.csv instead") from None
    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    except Exception as exc:  # scipy raises several types for a file that is not MATLAB, or lacks the fields
        raise DataError(f"{meta}: not the devkit's meta.mat (a 'synsets' struct with ILSVRC2012_ID, WNID, "
                        f"num_children): {type(exc).__name__}: {exc}") from None
    lines = path.read_text().split()
    if len(lines) != N_VAL or not all(x.isdigit() and int(x) in id_to_wnid for x in lines):
        raise DataError(f"{path}: expected {N_VAL:,} lines of class ids 1..{len(id_to_wnid)}, got {len(lines):,} "
                        f"lines" + ("" if len(lines) != N_VAL else " with ids outside that range"))
    return {n: id_to_wnid[int(x)] for n, x in enumerate(lines, 1)}


def read_ground_truth(path: Path) -> dict[int, str]:
    """Image number → wnid from either ground-truth file, told apart by its name."""
    if not path.is_file():
        raise DataError(f"{path}: the validation labels file does not exist")
    if path.suffix.lower() == ".csv":
        return read_loc_solution(path)
    return read_devkit(path)


def find_ground_truth(folder: Path) -> Optional[Path]:
    """LOC_val_solution.csv or the devkit's ground truth in ``folder`` or the two folders above it (Kaggle's
    archive keeps the CSV at its root, three levels above ILSVRC/Data/CLS-LOC/val)."""
    names = ("LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt",
             "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
    for base in (folder, *list(folder.resolve().parents)[:3]):
        for name in names:
            if (base / name).is_file():
                return base / name
    return None


def read_real(path: Path, n_classes: int = 1000) -> list[list[int]]:
    """ReaL's real.json: 50,000 lists of class indices (sorted-wnid order)."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, list) or len(data) != N_VAL:
        got = f"a list of {len(data):,}" if isinstance(data, list) else type(data).__name__
        raise DataError(f"{path}: expected ReaL's list of {N_VAL:,} label lists (one per validation image), got "
                        f"{got}")
    for i, labels in enumerate(data):
        if not isinstance(labels, list) or not all(type(k) is int and 0 <= k < n_classes for k in labels):
            raise DataError(f"{path}: entry {i} (ILSVRC2012_val_{i + 1:08d}) must be a list of class indices "
                            f"0..{n_classes - 1}, got {str(labels)[:60]}")
    return data


class _PlainData(pickle.Unpickler):
    """Shankar et al. publish their annotations as a pickle; unpickling runs any code the file names, so only
    Python's plain containers are allowed: a file that needs anything else is refused, not run."""

    _ALLOWED = {("builtins", n) for n in ("set", "frozenset", "tuple", "list", "dict")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it needs {module}.{name}, not plain data")
        return super().find_class(module, name)


def read_multilabel(path: Path) -> dict[int, frozenset[str]]:
    """Image number → the wnids judged correct, for the annotated validation images that are not problematic
    (the subset Shankar et al. score on; their ImageNet-V2 images are left out)."""
    try:
        if path.suffix.lower() in (".pickle", ".pkl"):
            with open(path, "rb") as f:
                data = _PlainData(f).load()
        else:
            data = json.loads(path.read_text())
    except (pickle.UnpicklingError, ValueError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not the multi-label annotations (a JSON or pickle of plain data): {exc}") from None
    keys = ("labeled_images", "image_labels", "image_map")
    if not isinstance(data, dict) or not all(k in data for k in keys):
        got = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: expected Shankar et al.'s annotations with keys {', '.join(keys)}, got {got}")
    out = {}
    for image in data["labeled_images"]:
        n = val_number(image if Path(str(image)).suffix else f"{image}.JPEG")
        try:
            if n is None or data["image_map"][image].get("problematic"):
                continue
            out[n] = frozenset(data["image_labels"][image]["correct"])
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"{path}: image {image!r} lacks its image_map / image_labels['correct'] entry") from None
    if not out:
        raise DataError(f"{path}: no annotated, unproblematic ILSVRC2012_val_ image")
    return out
