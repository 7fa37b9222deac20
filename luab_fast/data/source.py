"""What a loader reads: a fixed, ordered list of (image file, class) — the order defines each sample's row.

``source`` is an ImageFolder-layout directory (``root/<class>/<image>``; classes and files sorted by name,
as torchvision's ``ImageFolder``), a text file of ``path label`` lines (paths relative to the file's
folder; labels integers), or a ``(files, labels)`` pair.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from .._cli import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Source = Union[str, os.PathLike, tuple, "ImageList"]
# the most classes a label id may imply: a typo such as 10000000000 would otherwise make a classifier (and its
# per-class tables) of 10**10 classes; ImageNet-21k has 21,841
MAX_CLASSES = 1 << 20


@dataclass(frozen=True)
class ImageList:
    """files[i] is row i; labels int64 [N]; classes[k] names class k (folder names, or "0".."K-1")."""

    files: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def stems(self) -> list[str]:
        """File names up to their first ".": the image ids the byproduct and label-map stores are keyed by, and
        the ``task`` ids of ``--labels`` (one rule for all, so a dotted name cannot match one and not the other)."""
        from .._store.index import file_stem

        return [file_stem(f) for f in self.files]

    @property
    def empty_classes(self) -> tuple[str, ...]:
        """Classes no row belongs to (an empty class folder; a list file's label ids that never occur): the
        model still has an output for each, so they count in ``classes``."""
        counts = np.bincount(self.labels, minlength=len(self.classes)) if len(self.labels) else np.zeros(0, int)
        return tuple(c for c, n in zip(self.classes, counts) if n == 0)


def list_images(source: Source, min_classes: int = 2) -> ImageList:
    """The rows of ``source``; raises ValueError naming it when it is empty or malformed. A directory or list
    file must hold images of at least ``min_classes`` classes (a classifier of one class learns nothing); a
    class without images is kept (a list may use part of a bigger label space) and reported by a warning.
    ``(files, labels)`` pairs are the caller's own label space and are taken as they are; an ``ImageList``
    (listed before) is returned as it is."""
    if isinstance(source, ImageList):
        return source
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError(f"source must be (files, labels), got a tuple of {len(source)}")
        files, labels = source
        try:
            labels = np.asarray(labels, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"source (files, labels): labels must be integers 0..{MAX_CLASSES - 1}") from None
        if len(files) != len(labels) or labels.ndim != 1:
            raise ValueError(f"source must be (files, labels) of one length, got {len(files)} and {labels.shape}")
        if len(labels) and labels.max() >= MAX_CLASSES:
            raise ValueError(f"source (files, labels): labels must be class ids 0..{MAX_CLASSES - 1}, got "
                             f"{int(labels.max())}")
        n_cls = int(labels.max()) + 1 if len(labels) else 0
        classes = tuple(str(k) for k in range(n_cls))
        return _checked(ImageList(tuple(map(str, files)), labels, classes), "(files, labels)")
    path = Path(source)
    if path.is_dir():
        classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        files, labels = [], []
        for k, c in enumerate(classes):
            for f in sorted((path / c).iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    files.append(str(f))
                    labels.append(k)
        if not files:
            top = sum(f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() for f in path.iterdir())
            if top:  # images laid out flat: no folder says which class each is
                raise DataError(f"data source {path} needs class subfolders ({path}/<class>/<image>); found {top} "
                                f"image(s) at its top level and {len(classes)} class folder(s) holding none")
        images = _checked(ImageList(tuple(files), np.asarray(labels, np.int64), tuple(classes)), path)
    elif path.is_file():
        images = _checked(_read_list(path), path)
    else:
        raise ValueError(f"source must be an ImageFolder directory, a 'path label' list file or (files, labels); "
                         f"{source!r} does not exist")
    return _enough_classes(images, path, min_classes)


def _read_list(path: Path) -> ImageList:
    """A text file of '<path> <label>' lines; paths relative to the file's folder."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:  # an image or other binary file passed as --data
        raise DataError(f"data source {path} is neither a directory nor a text list of 'path label' lines "
                        f"(it is binary, not UTF-8 text)")
    files, labels, missing = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"data source {path}: line {n} must be '<path> <integer label>', got {line[:200]!r}")
        if not 0 <= int(parts[1]) < MAX_CLASSES:
            raise DataError(f"data source {path}: line {n} has label {parts[1][:30]}; labels must be class ids "
                            f"0..{MAX_CLASSES - 1}")
        f = Path(parts[0])
        f = f if f.is_absolute() else path.parent / f
        if f.is_dir():
            raise DataError(f"data source {path}: line {n} lists {parts[0]!r}, a folder; expected an image file")
        if not f.is_file():
            missing.append((n, parts[0], f))
        files.append(str(f))
        labels.append(int(parts[1]))
    if missing:  # checked here, not at the first decode: all at once, with where each path was looked for
        n, written, resolved = missing[0]
        raise DataError(f"data source {path}: {len(missing)} listed image(s) do not exist, e.g. line {n}: "
                        f"{written!r} (looked for {os.path.abspath(resolved)}); relative paths are read from the "
                        f"list file's folder {os.path.abspath(path.parent)}")
    labels_arr = np.asarray(labels, np.int64)
    n_cls = int(labels_arr.max()) + 1 if len(labels_arr) else 0
    return ImageList(tuple(files), labels_arr, tuple(str(k) for k in range(n_cls)))


def _checked(images: ImageList, source) -> ImageList:
    if not len(images):
        raise DataError(f"data source {source} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if (images.labels < 0).any():
        raise DataError(f"data source {source}: labels must be >= 0")
    return images


def _enough_classes(images: ImageList, path: Path, min_classes: int) -> ImageList:
    empty = images.empty_classes
    absent = set(empty)  # a set: a tuple made this quadratic, hours for a list file with a label id near 10**6
    used = [c for c in images.classes if c not in absent]
    if len(used) < min_classes:
        raise DataError(f"data source {path}: a classifier needs at least {min_classes} classes, got {len(used)}: "
                        f"{used[:10]}" + (f" (and {len(empty)} without images)" if empty else ""))
    if empty:  # training still works (the class is never a target) but it is rarely what was meant
        warnings.warn(f"data source {path}: {len(empty)} of {len(images.classes)} classes have no images, e.g. "
                      f"{list(empty[:5])}" + (" (label ids never used in the list file)" if path.is_file()
                                              else " (class folders without images)"), stacklevel=3)
    return images


def shard_rows(n: int, epoch: int, seed: int, rank: int, world_size: int, shuffle: bool,
               drop_last: bool, batch_size: int) -> np.ndarray:
    """The rows rank ``rank`` reads in ``epoch``: one permutation of all n rows per (seed, epoch), the same
    on every rank, cut into ``world_size`` contiguous shards of equal length (the tail that does not fill a
    batch on every rank is dropped with ``drop_last``, else the shards are padded by wrapping around)."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    per_rank = n // world_size if drop_last else -(-n // world_size)
    if drop_last:
        per_rank -= per_rank % batch_size
    else:
        order = np.resize(order, per_rank * world_size)  # wraps: every rank gets as many
    return order[rank * per_rank:(rank + 1) * per_rank]


def check_rank(rank: int, world_size: int) -> None:
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, "
                         f"world_size={world_size}")


def as_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64)
