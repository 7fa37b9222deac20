"""What a loader reads: a fixed, ordered list of (image file, class) — the order defines each sample's row.

``source`` is an ImageFolder-layout directory (``root/<class>/<image>``; classes and files sorted by name,
as torchvision's ``ImageFolder``), a text file of ``path label`` lines (paths relative to the file's
folder; labels integers), or a ``(files, labels)`` pair.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Source = Union[str, os.PathLike, tuple]


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
        """File names without suffix: the image ids the byproduct and label-map stores are keyed by."""
        return [Path(f).stem for f in self.files]


def list_images(source: Source) -> ImageList:
    """The rows of ``source``; raises ValueError naming it when it is empty or malformed."""
    if isinstance(source, tuple):
        files, labels = source
        labels = np.asarray(labels, dtype=np.int64)
        if len(files) != len(labels) or labels.ndim != 1:
            raise ValueError(f"source must be (files, labels) of one length, got {len(files)} and {labels.shape}")
        n_cls = int(labels.max()) + 1 if len(labels) else 0
        return _checked(ImageList(tuple(map(str, files)), labels, tuple(str(k) for k in range(n_cls))), source)
    path = Path(source)
    if path.is_dir():
        classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        files, labels = [], []
        for k, c in enumerate(classes):
            for f in sorted((path / c).iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                    files.append(str(f))
                    labels.append(k)
        return _checked(ImageList(tuple(files), np.asarray(labels, np.int64), tuple(classes)), source)
    if path.is_file():
        files, labels = [], []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ValueError(f"source {path}: line {n} must be '<path> <integer label>', got {line!r}")
            f = Path(parts[0])
            files.append(str(f if f.is_absolute() else path.parent / f))
            labels.append(int(parts[1]))
        labels_arr = np.asarray(labels, np.int64)
        n_cls = int(labels_arr.max()) + 1 if len(labels_arr) else 0
        return _checked(ImageList(tuple(files), labels_arr, tuple(str(k) for k in range(n_cls))), source)
    raise ValueError(f"source must be an ImageFolder directory, a 'path label' list file or (files, labels); "
                     f"{source!r} does not exist")


def _checked(images: ImageList, source) -> ImageList:
    if not len(images):
        raise ValueError(f"source {source!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if (images.labels < 0).any():
        raise ValueError(f"source {source!r}: labels must be >= 0")
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
