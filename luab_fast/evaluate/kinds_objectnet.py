"""ObjectNet (Barbu et al., NeurIPS 2019) scored as its authors' code scores an ImageNet-1k classifier.

Layout (the ``objectnet-1.0`` release): ``ROOT/images/<folder>/<image>.png`` (313 class folders) and
``ROOT/mappings/``: ``folder_to_objectnet_label.json`` ({folder: ObjectNet label}),
``objectnet_to_imagenet_1k.json`` ({ObjectNet label: "ImageNet label; ImageNet label"}, the 113 overlapping
classes), ``imagenet_to_label_2012_v2`` (one ImageNet label per line; line i = ImageNet 2012 id i) and
``pytorch_to_imagenet_2012_id.json`` ({PyTorch class index: ImageNet 2012 id}; PyTorch index = position among the
sorted wnids, ImageNet-1k's usual class order). The ObjectNet class index of a folder is its position among the
sorted folder names (torchvision ImageFolder's order).

Protocol (abarbu/objectnet-template-pytorch): ``objectnet_pytorch_dataloader.py``, ``ObjectNetDataset.getImage``
crops ``BORDER_PX`` = 2 pixels off every side ("crop out red border") before the model's own transform;
``objectnet_eval.py`` takes the top-5 of the softmax over all 1,000 outputs and maps each through
``imageNetIDToObjectNetID`` (an ImageNet class that belongs to no ObjectNet class becomes -1, never correct);
``validate_and_score.py`` counts top-1 when the first mapped prediction is the image's class and top-5 when any is.
Images are those of the 113 overlapping classes (the ObjectNet paper's ImageNet comparison). ``top1_restricted``
is the other protocol in use (Taori et al. 2020, "Measuring robustness to natural distribution shifts", and the
model-soups code): the argmax over only the ImageNet classes that map to an ObjectNet class.

How to call::

    on = read_objectnet(ROOT)            # on.files: images to decode; on.labels: ObjectNet class per file
    img = crop_border(PIL.Image.open(f).convert("RGB"))   # then the usual resize + centre crop
    metrics = objectnet_scores(logits, on.labels, on.imagenet_to_objectnet)
    # logits: [N, 1000] numpy/torch in ImageNet-1k (sorted-wnid) class order, rows in on.files order
    # -> {"top1", "top5", "top1_restricted": fractions in [0, 1], "n": images}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._cli import DataError
from ._kind_files import as_index, as_scores, images_in, read_json, subfolders

BORDER_PX = 2  # objectnet_pytorch_dataloader.py: cropArea = (2, 2, width - 2, height - 2)
IMAGENET_CLASSES = 1000
MAPPING_FILES = ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json",
                 "imagenet_to_label_2012_v2", "pytorch_to_imagenet_2012_id.json")


@dataclass(frozen=True)
class ObjectNet:
    files: tuple[str, ...]  # the images of the overlapping classes, by folder then name
    labels: np.ndarray  # int64 [N]: ObjectNet class index (position of the folder in ``folders``)
    folders: tuple[str, ...]  # every ObjectNet class folder named by the mapping, sorted
    imagenet_to_objectnet: np.ndarray  # int64 [1000]: ObjectNet class of each ImageNet class, -1 for none


def read_objectnet(root: str | Path) -> ObjectNet:
    """The images of ObjectNet's classes that overlap ImageNet-1k and the ImageNet → ObjectNet class map, from
    ``root`` (the folder holding ``images/`` and ``mappings/``, or the one holding ``objectnet-1.0/``).
    DataError naming the file for a missing or malformed mapping, an image folder the mapping does not know or an
    overlapping class without images."""
    root = Path(root)
    if not (root / "images").is_dir() and (root / "objectnet-1.0").is_dir():  # the archive's own top folder
        root = root / "objectnet-1.0"
    images, mappings = root / "images", root / "mappings"
    for d in (images, mappings):
        if not d.is_dir():
            raise DataError(f"objectnet {root}: {d} is missing (expected images/<folder>/ and mappings/*.json)")
    folders, imagenet_to_objectnet = _class_map(mappings)
    known = set(folders)
    stray = [d.name for d in subfolders(images) if d.name not in known]
    if stray:
        raise DataError(f"objectnet {images}: folder(s) {stray[:5]} are not in "
                        f"{mappings / MAPPING_FILES[0]} ({len(known)} folders)")
    files: list[str] = []
    labels: list[int] = []
    for k in sorted(set(imagenet_to_objectnet[imagenet_to_objectnet >= 0].tolist())):
        found = images_in(images / folders[k]) if (images / folders[k]).is_dir() else []
        if not found:
            raise DataError(f"objectnet {images / folders[k]}: an overlapping class folder holds no images "
                            f"(an incomplete download?)")
        files += found
        labels += [k] * len(found)
    return ObjectNet(tuple(files), np.asarray(labels, np.int64), tuple(folders), imagenet_to_objectnet)


def _class_map(mappings: Path) -> tuple[list[str], np.ndarray]:
    f_folder, f_objectnet, f_lines, f_pytorch = (mappings / name for name in MAPPING_FILES)
    folder_label = read_json(f_folder, "objectnet")
    on_to_in = read_json(f_objectnet, "objectnet")
    pytorch_to_line = read_json(f_pytorch, "objectnet")
    for path, value in ((f_folder, folder_label), (f_objectnet, on_to_in), (f_pytorch, pytorch_to_line)):
        if not isinstance(value, dict) or not value:
            raise DataError(f"objectnet {path}: expected a non-empty JSON object, got {type(value).__name__}")
    if not f_lines.is_file():
        raise DataError(f"objectnet {f_lines} is missing (expected one ImageNet label per line)")
    lines = [ln.strip() for ln in f_lines.read_text(encoding="utf-8").splitlines()]
    line_of: dict[str, list[int]] = {}
    for i, name in enumerate(lines):
        line_of.setdefault(name, []).append(i)
    line_to_pytorch = {}
    for key, line in pytorch_to_line.items():
        ok = key.isdigit() and int(key) < IMAGENET_CLASSES and isinstance(line, int) and 0 <= line < len(lines)
        if not ok:
            raise DataError(f"objectnet {f_pytorch}: entry {key!r}: {line!r} must map a class index 0..999 to a "
                            f"line of {f_lines.name} (0..{len(lines) - 1})")
        line_to_pytorch[line] = int(key)
    folders = sorted(folder_label)
    folder_of = {label: folder for folder, label in folder_label.items()}
    index = {folder: k for k, folder in enumerate(folders)}
    out = np.full(IMAGENET_CLASSES, -1, np.int64)
    for label, names in on_to_in.items():
        if label not in folder_of:
            raise DataError(f"objectnet {f_objectnet}: label {label!r} has no folder in {f_folder.name}")
        if not isinstance(names, str):
            raise DataError(f"objectnet {f_objectnet}: {label!r} must map to 'name; name', got {names!r}")
        for name in names.split("; "):
            lines_of_name = line_of.get(name.strip())
            if not lines_of_name:
                raise DataError(f"objectnet {f_lines}: ImageNet label {name!r} (of ObjectNet {label!r}) is on no "
                                f"line")
            # every line carrying the name: the label file may repeat a name, and both are that ObjectNet class
            for line in lines_of_name:
                if line not in line_to_pytorch:
                    raise DataError(f"objectnet {f_pytorch}: no class index maps to line {line} ({name!r})")
                cls = line_to_pytorch[line]
                if out[cls] not in (-1, index[folder_of[label]]):
                    raise DataError(f"objectnet {f_objectnet}: ImageNet class {cls} ({name!r}) is mapped to two "
                                    f"ObjectNet classes, {folders[out[cls]]!r} and {folder_of[label]!r}")
                out[cls] = index[folder_of[label]]
    return folders, out


def crop_border(image: Any, border: int = BORDER_PX) -> Any:
    """``image`` without ``border`` pixels on each side, as the ObjectNet authors' loader does before the model's
    transform: a PIL image, a numpy array [H, W] or [H, W, C], or a torch tensor [..., H, W]."""
    if isinstance(image, Image.Image):
        w, h = image.size
    elif isinstance(image, torch.Tensor):
        h, w = image.shape[-2:]
    elif isinstance(image, np.ndarray) and image.ndim in (2, 3):
        h, w = image.shape[:2]
    else:
        raise ValueError(f"image must be a PIL image, a numpy [H, W(, C)] array or a torch [..., H, W] tensor, "
                         f"got {type(image).__name__}")
    if w <= 2 * border or h <= 2 * border:
        raise ValueError(f"image of {w}x{h} pixels is too small to crop a {border}-pixel border")
    if isinstance(image, Image.Image):
        return image.crop((border, border, w - border, h - border))
    if isinstance(image, torch.Tensor):
        return image[..., border:h - border, border:w - border]
    return image[border:h - border, border:w - border]


def objectnet_scores(logits: Any, labels: Any, imagenet_to_objectnet: Any) -> dict[str, Any]:
    """{"top1", "top5", "top1_restricted": fractions, "n"} for ``logits`` [N, 1000] (ImageNet-1k class order),
    ``labels`` [N] (ObjectNet class per image) and ``imagenet_to_objectnet`` [1000] (-1: no ObjectNet class)."""
    scores = as_scores(logits, "logits", IMAGENET_CLASSES)
    labels = as_index(labels, "labels", len(scores))
    mapping = as_index(imagenet_to_objectnet, "imagenet_to_objectnet", IMAGENET_CLASSES)
    if not (mapping >= 0).any():
        raise ValueError("imagenet_to_objectnet maps no ImageNet class to an ObjectNet class")
    if len(scores) == 0:
        raise ValueError("logits has no rows: nothing to score")
    # the softmax the authors apply before topk changes no order, so the top-5 of the logits is theirs
    top5 = mapping[np.argsort(-scores, axis=1, kind="stable")[:, :5]]
    restricted = np.where(mapping >= 0, scores, -np.inf).argmax(1)
    return {"top1": float((top5[:, 0] == labels).mean()), "top5": float((top5 == labels[:, None]).any(1).mean()),
            "top1_restricted": float((mapping[restricted] == labels).mean()), "n": int(len(labels))}
