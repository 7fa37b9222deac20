"""The kinds of evaluation split, in one table (``REGISTRY``: name → Kind).

A kind knows its public layout and its metric: ``read(path, classes, options)`` lists the images and their
targets in the model's class indices (``classes``: the model's wnids, in its output order) as a ``Split``, and
``score(top, split)`` turns the model's top-5 class indices per image ([N, 5], already restricted to
``split.mask`` where the kind restricts the logits) into ``{metric: value, "n": images}``. ``top1`` is the
headline accuracy (for ``real`` the ReaL accuracy, for ``multilabel`` the multi-label accuracy), so the trainer
logs every kind alike; ImageNet-O, a detection score, has ``aupr`` instead (``headline``). A kind that needs
more than the top-5 (the logits of some classes) overrides ``outputs``, which runs on the device per batch; the
robustness papers' kinds are in kinds_papers.py. Layouts and protocols, with their sources: docs/evaluation.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .._cli import DataError
from ..data.crops import CENTER_FRACTION
from ..data.source import list_images
from . import flat_val


@dataclass(frozen=True)
class Options:
    """The label files a kind may need beyond its folder (None: looked for by its usual name)."""

    val_labels: Optional[Path] = None  # LOC_val_solution.csv or the devkit's ground truth
    real_labels: Optional[Path] = None  # real.json
    multilabel_labels: Optional[Path] = None  # Shankar et al.'s annotations
    in9_map: Optional[Path] = None  # the Backgrounds Challenge's in_to_in9.json
    in_distribution: Optional[Path] = None  # ImageNet-O's in-distribution set: ImageNet val in wnid folders
    clean_error: Optional[float] = None  # ImageNet-C's relative mCE: the model's clean top-1 error
    boxes: Optional[Path] = None  # loc: LOC_val_solution.csv or a folder of <stem>.xml
    crop_fraction: Optional[float] = None  # --crop-pct: every split's crop fraction (None: each kind's own)


@dataclass(frozen=True)
class Split:
    name: str
    kind: str
    path: Path
    files: tuple[str, ...]
    labels: np.ndarray  # int64 [N]: the model's class index per image, -1 where the kind has label sets
    mask: Optional[np.ndarray] = None  # the model's class indices the logits are restricted to (R, A)
    label_sets: Optional[list[frozenset[int]]] = None  # real, multilabel: the correct classes per image
    class_names: tuple[str, ...] = ()  # the model's classes (per-class accuracy is keyed by them)
    extra: dict[str, Any] = field(default_factory=dict)


def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids in class-index (sorted) order, as timm ships them."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


def to_model(wnids: Sequence[str], classes: Sequence[str], where: str) -> np.ndarray:
    """Each wnid's index among the model's classes; a DataError naming the split where the model lacks some."""
    index = {c: k for k, c in enumerate(classes)}
    unknown = sorted({w for w in wnids if w not in index})
    if unknown:
        raise DataError(f"{where}: {len(unknown)} class(es) are not among the model's {len(classes)} classes, e.g. "
                        f"{unknown[:5]} (the model's classes come from its checkpoint or --class-map)")
    return np.asarray([index[w] for w in wnids], np.int64)


def topk_accuracy(top: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    hit = top == labels[:, None]
    return {"top1": float(hit[:, 0].mean()), "top5": float(hit.any(1).mean()), "n": int(len(labels))}


def set_accuracy(top: np.ndarray, sets: list[frozenset[int]]) -> dict[str, Any]:
    """Top-1: the first prediction is in the image's set; top-5: any of the five is (timm's real_labels.py)."""
    first = [int(t[0]) in s for t, s in zip(top, sets)]
    five = [any(int(k) in s for k in t) for t, s in zip(top, sets)]
    return {"top1": float(np.mean(first)), "top5": float(np.mean(five)), "n": len(sets)}


def logits_of(out: Any) -> torch.Tensor:
    """A LUABModel returns (logits, point, heat); a timm model its logits."""
    return out[0] if isinstance(out, (tuple, list)) else out


class Kind:
    name = ""
    about = ""  # one line for --help and the results table
    headline = "top1"  # the metric printed and charted
    suite_names: tuple[str, ...] = ()  # folder names --suite looks for under its ROOT
    # the evaluation crop of the kind's own protocol (docs/evaluation-kinds.md, "Crops"): the centre square of
    # crop_fraction of the shorter side, after crop_border pixels are cut off every side, resized to the model's
    # size. The default, 87.5% (resize 256, crop 224), is timm's validate.py and the ImageNet papers' crop.
    crop_fraction: float = CENTER_FRACTION
    crop_border = 0

    def crop(self, options: Options) -> tuple[float, int]:
        """(fraction, border) this split is decoded with: ``--crop-pct`` (``options.crop_fraction``) overrides
        the kind's fraction; the border is part of the dataset's format (ObjectNet's frame) and stays."""
        return (self.crop_fraction if options.crop_fraction is None else options.crop_fraction), self.crop_border

    def read(self, path: Path, classes: Sequence[str], options: Options, split: str) -> Split:
        raise NotImplementedError

    @staticmethod
    def logits(model: Any, images: torch.Tensor) -> torch.Tensor:
        return logits_of(model(images)).float()

    def score(self, top: np.ndarray, split: Split) -> dict[str, Any]:
        return topk_accuracy(top, split.labels)

    def outputs(self, model: Any, images: torch.Tensor, labels: torch.Tensor, split_mask: Optional[torch.Tensor],
                k: int) -> torch.Tensor:
        """What is kept of a batch on the device (``labels``: the model's class per image, where the kind has
        one): by default the top-k class indices, over ``split_mask`` where given."""
        logits = self.logits(model, images)
        if split_mask is None:
            return logits.topk(k, 1).indices
        return split_mask[logits.index_select(1, split_mask).topk(k, 1).indices]


def _folder(path: Path, split: str, kind: str) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    if not path.is_dir():
        raise DataError(f"--split {split}={kind}:{path}: expected a folder of class folders, "
                        + ("got a file" if path.exists() else "it does not exist"))
    images = list_images(path, min_classes=1)
    return list(images.files), images.labels, images.classes


class WnidFolders(Kind):
    """ImageFolder of wnids: ImageNet-Sketch; plain top-1, top-5."""

    name, about, suite_names = "sketch", "ImageNet-Sketch: wnid folders; top-1, top-5", ("sketch", "imagenet-sketch")

    restrict = False  # R and A: the logits restricted to the classes of the split's folders

    def read(self, path, classes, options, split):
        files, labels, folders = _folder(path, split, self.name)
        index = to_model(folders, classes, f"--split {split}={self.name}:{path}")
        return Split(split, self.name, path, tuple(files), index[labels], np.unique(index) if self.restrict else None,
                     class_names=tuple(classes))


class ImageNet(WnidFolders):
    """The ILSVRC-2012 validation set: wnid folders, or the flat folder with its ground-truth file."""

    name, about = "imagenet", "ImageNet val: top-1, top-5, per-class accuracy"
    suite_names = ("val", "imagenet/val", "ILSVRC/Data/CLS-LOC/val")

    def read(self, path, classes, options, split):
        where = f"--split {split}={self.name}:{path}"
        if path.is_dir() and any(d.is_dir() for d in path.iterdir()):
            return super().read(path, classes, options, split)
        files, numbers = flat_val.val_files(path, f"--split {split}={self.name}:")
        gt_file = options.val_labels or flat_val.find_ground_truth(path)
        if gt_file is None:
            raise DataError(f"{where}: a flat validation folder needs its labels: LOC_val_solution.csv or the "
                            f"devkit's ILSVRC2012_validation_ground_truth.txt (+ meta.mat) in it or above it, or "
                            f"--val-labels FILE")
        truth = flat_val.read_ground_truth(Path(gt_file))
        lacking = [int(n) for n in numbers if int(n) not in truth]
        if lacking:
            raise DataError(f"{gt_file}: holds no label for {len(lacking)} image(s) of {path}, e.g. "
                            f"ILSVRC2012_val_{lacking[0]:08d}")
        labels = to_model([truth[int(n)] for n in numbers], classes, where)
        return Split(split, self.name, path, tuple(files), labels, class_names=tuple(classes))

    def score(self, top, split):
        out = topk_accuracy(top, split.labels)
        hits = np.bincount(split.labels, top[:, 0] == split.labels, len(split.class_names))
        count = np.bincount(split.labels, minlength=len(split.class_names))
        out["per_class"] = {split.class_names[k]: round(float(hits[k] / count[k]), 4) for k in np.flatnonzero(count)}
        return out


class V2(Kind):
    """ImageNetV2 (any of its three variants): folders 0..999, the class index in sorted-wnid order."""

    name, about = "v2", "ImageNetV2: folders 0..999 (sorted-wnid index); top-1, top-5"
    suite_names = ("imagenetv2-matched-frequency-format-val", "imagenetv2-matched-frequency")

    def read(self, path, classes, options, split):
        files, labels, folders = _folder(path, split, self.name)
        bad = [f for f in folders if not (f.isdigit() and int(f) < 1000)]
        if bad:
            raise DataError(f"--split {split}={self.name}:{path}: ImageNetV2's class folders are named 0..999, got "
                            f"{bad[:5]}")
        wnids = imagenet_wnids()
        index = to_model([wnids[int(f)] for f in folders], classes, f"--split {split}={self.name}:{path}")
        return Split(split, self.name, path, tuple(files), index[labels], class_names=tuple(classes))


class Restricted(WnidFolders):
    """ImageNet-R: 200 wnid folders; the logits restricted to those 200 classes (Hendrycks et al.'s protocol)."""

    name, suite_names, restrict = "r", ("imagenet-r",), True
    about = "ImageNet-R: top-1 with the logits restricted to the split's 200 classes"


class Adversarial(Restricted):
    name, suite_names = "a", ("imagenet-a",)
    about = "ImageNet-A: top-1 with the logits restricted to the split's 200 classes"


class _LabelSets(Kind):
    """The validation images by number, scored against a set of correct classes each."""

    file_option = ""

    def sets(self, numbers: np.ndarray, classes: Sequence[str], options: Options, path: Path, split: str
             ) -> tuple[np.ndarray, list[frozenset[int]]]:
        raise NotImplementedError

    def read(self, path, classes, options, split):
        files, numbers = flat_val.val_files(path, f"--split {split}={self.name}:")
        keep, sets = self.sets(numbers, classes, options, path, split)
        if not keep.any():
            raise DataError(f"--split {split}={self.name}:{path}: none of its {len(files)} images has a label in "
                            f"the {self.file_option} file")
        files = [f for f, k in zip(files, keep) if k]
        return Split(split, self.name, path, tuple(files), np.full(len(files), -1, np.int64), label_sets=sets,
                     class_names=tuple(classes))

    def score(self, top, split):
        return set_accuracy(top, split.label_sets)

    def _file(self, given: Optional[Path], path: Path, names: Sequence[str], split: str) -> Path:
        for f in ([given] if given else [base / n for base in (path, path.parent) for n in names]):
            if f.is_file():
                return f
        looked = str(given) if given else " or ".join(str(path / n) for n in names) + f" (or in {path.parent})"
        raise DataError(f"--split {split}={self.name}:{path}: its labels file does not exist: {looked}; give "
                        f"{self.file_option} FILE")


class Real(_LabelSets):
    name, about, file_option = "real", "ReaL: top-1 in the reassessed label set (images without one left out)", \
        "--real-labels"

    def sets(self, numbers, classes, options, path, split):
        real = flat_val.read_real(self._file(options.real_labels, path, ("real.json",), split))
        model = {c: k for k, c in enumerate(classes)}
        wnids = imagenet_wnids()
        if not any(w in model for w in wnids):
            raise DataError(f"--split {split}=real:{path}: ReaL's labels are ImageNet-1k classes, and the model "
                            f"has none of them (its classes: {list(classes[:3])}...)")
        keep = np.asarray([bool(real[n - 1]) for n in numbers])
        # a class the model lacks can never be predicted: it stays out of the set (and that image counts wrong)
        sets = [frozenset(model[wnids[k]] for k in real[n - 1] if wnids[k] in model) for n in numbers[keep]]
        return keep, sets


class MultiLabel(_LabelSets):
    name, file_option = "multilabel", "--multilabel-labels"
    about = "multi-label accuracy (Shankar et al. 2020): top-1 among the classes judged correct, annotated images"

    def sets(self, numbers, classes, options, path, split):
        names = ("human_accuracy.pickle", "human_accuracy.json")
        truth = flat_val.read_multilabel(self._file(options.multilabel_labels, path, names, split))
        model = {c: k for k, c in enumerate(classes)}
        keep = np.asarray([int(n) in truth for n in numbers])
        sets = [frozenset(model[w] for w in truth[int(n)] if w in model) for n in numbers[keep]]
        return keep, sets


REGISTRY: dict[str, Kind] = {k.name: k for k in (ImageNet(), Real(), V2(), MultiLabel(), WnidFolders(),
                                                 Restricted(), Adversarial())}


def register(kind: Kind) -> Kind:
    """Adds a kind to the table (the objectnet, imagenet-c, loc kinds register themselves here)."""
    REGISTRY[kind.name] = kind
    return kind


from . import kinds_loc, kinds_papers  # noqa: E402,F401 - register the localisation and robustness kinds
