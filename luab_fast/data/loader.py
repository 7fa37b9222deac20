"""``build_loader``: batches of images with the crop window each was cut from, and the per-crop targets.

Each batch is a dict of torch tensors on the training device (docs/architecture.md conventions):
``images`` float [B, 3, S, S] (ImageNet mean/std), ``labels`` int64 [B] (the source's labels), ``rows`` int64
[B] (the sample's row in the source's fixed order), ``boxes`` float32 [B, 4] (x0, y0, x1, y1) normalised,
``flips`` bool [B], ``sizes`` int64 [B, 2] (original H, W), and ``target``, the class target to train on: int64
[B] or float32 [B, C], from ``label_maps=`` (ReLabel's pooled targets), ``labels=`` (aggregated labels [N] or
posteriors [N, C] by row) or the source's labels, in that order (targets.py). With ``byproducts=`` also
``point`` [B, 2] + ``point_weight`` [B] and ``heat`` [B, h, w] at ``heat_size``. Targets are built on the device
by the ops, for the whole batch at once. With ``augment=`` (augment.py), a batch whose images a geometric op
moved also has ``affine`` float32 [B, 2, 3]: crop-normalised point → where the image shows it (the targets
already follow it). With ``mixing=`` (training loaders) CutMix / Mixup then mixes the pixels and every target
(mixing.py).

Order: one permutation of the rows per (seed, epoch), cut into ``world_size`` disjoint shards; crop windows
and flips are drawn on the host per (seed, epoch, rank, batch), so a seed fixes everything and a resumed run
(``start_batch``) sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np
import torch

from .._checks import is_integer, is_number
from .crops import CENTER_FRACTION, RATIO, SCALE, center_windows, random_resized_windows, windows_to_boxes
from .decode import image_sizes
from .source import ImageList, Source, check_rank, list_images, shard_rows

if TYPE_CHECKING:  # imported where used: targets pulls in the ops and their kernels
    from .augment import Augment
    from .mixing import Mixing
    from .targets import Targets

log = logging.getLogger("luab_fast.data")
# the largest values the decoders can take (DALI aborts the process on 100,000 threads; a 2**40 crop side
# cannot be allocated; DALI's seed is an int64); far beyond any real run
MAX_IMAGE_SIZE = 4096
MAX_THREADS = 1024
MAX_SEED = 2 ** 63 - 1
_LOGGED: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.warning(message)


def default_threads() -> int:
    """Decode threads when none are asked for: this process's cores, at most 16 (decode runs between the
    steps' launches on a GPU, and between the steps themselves on a CPU, so it may use every core)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 2
    return max(1, min(16, cores))


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401

        return True
    except Exception:
        return False


class Loader:
    """Iterable over one epoch's batches (``set_epoch`` picks the epoch); ``len`` = batches per epoch."""

    def __init__(self, images: ImageList, batch_size: int, train: bool, device: torch.device, image_size: int,
                 rank: int, world_size: int, seed: int, backend: str, drop_last: bool, channels_last: bool,
                 threads: int, targets: "Targets", crop_scale: tuple[float, float] = SCALE,
                 mixing: Optional["Mixing"] = None, augment: Optional["Augment"] = None,
                 crop_ratio: tuple[float, float] = RATIO, interpolation: str = "bilinear",
                 crop_fraction: float = CENTER_FRACTION, crop_border: int = 0) -> None:
        self.images, self.batch_size, self.train = images, batch_size, train
        self.crop_fraction, self.crop_border = crop_fraction, crop_border  # the evaluation crop (center_windows)
        # --aa / --reprob / --color-jitter (augment.py), drawn after each training batch's crops and flips
        self.augment = augment if train and augment is not None and augment.active else None
        self.crop_ratio = crop_ratio
        self.mixing = mixing  # CutMix / Mixup of the training batches (mixing.py), after their targets
        self.crop_scale = crop_scale
        self.device, self.image_size, self.seed = device, image_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.channels_last, self.backend, self.targets = channels_last, backend, targets
        self.epoch = 0
        self.sizes = image_sizes(images.files)
        self.labels = torch.from_numpy(images.labels).to(device)
        self._files = np.asarray(images.files, dtype=object)
        if backend == "dali":
            from .decode import DaliDecoder

            # no batch holds more than a rank's rows: a larger pipeline would only decode padding (and one of
            # 2**40 samples cannot be built at all)
            most = max(1, min(batch_size, len(self.epoch_rows(0))))
            aug = self.augment
            self.decode = DaliDecoder(most, image_size, device, threads, seed, interpolation,
                                      warp=aug is not None and aug.geometric,
                                      photo_layers=0 if aug is None else aug.photo_layers)
        else:
            from .decode import TorchvisionDecoder

            self.decode = TorchvisionDecoder(image_size, device, threads, interpolation)
        self.last_epoch_seconds: Optional[float] = None
        self.last_epoch_images = 0

    @property
    def has_byproducts(self) -> bool:
        """Whether the batches carry the byproduct targets (``point``, ``point_weight``, ``heat``)."""
        return self.targets.byproducts is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_rows(self, epoch: Optional[int] = None) -> np.ndarray:
        """The rows this rank reads in ``epoch`` (default: the current one), in order."""
        return shard_rows(len(self.images), self.epoch if epoch is None else epoch, self.seed, self.rank,
                          self.world_size, self.train, self.drop_last, self.batch_size)

    def __len__(self) -> int:
        n = len(self.epoch_rows(0))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def throughput(self) -> Optional[float]:
        """Images per second over the last complete epoch (None before one)."""
        if not self.last_epoch_seconds:
            return None
        return self.last_epoch_images / self.last_epoch_seconds

    def batch(self, rows: np.ndarray, index: int) -> dict[str, torch.Tensor]:
        """The batch of ``rows``, the ``index``-th of the epoch (it seeds the crops)."""
        sizes = self.sizes[rows]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, index])
            windows = random_resized_windows(sizes, rng, scale=self.crop_scale, ratio=self.crop_ratio)
            flips = rng.random(len(rows)) < 0.5
            params = None if self.augment is None else self.augment.draw(rng, len(rows))
        else:
            windows = center_windows(sizes, self.crop_fraction, self.crop_border)
            flips, params = np.zeros(len(rows), dtype=bool), None
        from .augment_ops import erase, target_kwargs

        images = self.decode(self._files[rows].tolist(), windows, flips, augment=params)
        if params is not None:
            images = erase(images, params, self.augment.remode, self._to_device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        rows_t = self._to_device(rows.astype(np.int64))
        out = {"images": images, "labels": self.labels[rows_t], "rows": rows_t,
               "boxes": self._to_device(windows_to_boxes(windows, sizes)), "flips": self._to_device(flips),
               "sizes": self._to_device(sizes)}
        moved = target_kwargs(params, rows, self._to_device)
        if moved is not None:  # the batch's geometric augmentation, crop-normalised input → output
            out["affine"] = moved["forward"]
        out.update(self.targets(out, moved))
        if self.mixing is not None and self.train:
            self.mixing(out, self.targets, self.epoch, [self.seed, self.epoch, self.rank, index], self._to_device)
        return out

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device without a sync: a blocking copy from pageable memory waits for the GPU's
        queue (the training step in flight); a pinned one goes asynchronously (the caching host allocator keeps
        the block until the copy is done)."""
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def __iter__(self, start_batch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        rows = self.epoch_rows()
        n_batches = len(self)
        t0, seen = time.perf_counter(), 0
        for i in range(start_batch, n_batches):
            batch = self.batch(rows[i * self.batch_size:(i + 1) * self.batch_size], i)
            seen += len(batch["rows"])
            yield batch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last_epoch_seconds, self.last_epoch_images = time.perf_counter() - t0, seen

    def iter_from(self, start_batch: int) -> Iterator[dict[str, torch.Tensor]]:
        """This epoch's batches from ``start_batch`` on (resuming mid-epoch)."""
        return self.__iter__(start_batch)


def build_loader(source: Source, batch_size: int, train: bool = True, device: str | torch.device = "cuda",
                 image_size: int = 224, rank: int = 0, world_size: int = 1, seed: int = 0,
                 backend: Optional[str] = None, drop_last: Optional[bool] = None, channels_last: bool = False,
                 threads: Optional[int] = None, byproducts: Any = None, label_maps: Any = None, labels: Any = None,
                 heat_size: Optional[tuple[int, int]] = None, heat_sigma: float = 1.0,
                 label_box_order: str = "xyxy", crop_scale: tuple[float, float] = SCALE,
                 mixing: Optional["Mixing"] = None, augment: Optional["Augment"] = None,
                 crop_ratio: tuple[float, float] = RATIO, interpolation: str = "bilinear",
                 crop_fraction: Optional[float] = None, crop_border: int = 0) -> Loader:
    """A loader over ``source`` (an ImageFolder directory, a 'path label' list file or (files, labels)).

    ``backend``: "dali" (default when importable) or "torchvision"; the choice is logged once.
    ``device``: where batches live ("cuda" decodes on the GPU with DALI; "cpu" runs DALI's CPU-only mode).
    ``drop_last`` defaults to ``train``. Stores (paths or opened stores) add targets; see the module doc.
    ``heat_size``: (h, w) of the model's heat map (``LUABModel.heat_size``), required with ``byproducts``: the
    trace heat maps are rasterised at it.
    ``crop_scale``: the (min, max) area fraction of the training crops (RandomResizedCrop's ``scale``).
    ``threads``: decode threads (default: :func:`default_threads`).
    ``mixing``: CutMix / Mixup of the training batches (a ``mixing.Mixing``; training loaders only).
    ``augment``: RandAugment / AutoAugment, colour jitter, random erasing (an ``augment.Augment``, from
    ``augment.build_augment``; training loaders only). ``crop_ratio``: RandomResizedCrop's aspect range.
    ``interpolation``: the resize (and affine) filter, "bilinear", "bicubic" or "nearest".
    ``crop_fraction``: evaluation loaders (``train=False``) only: the side of the centre square as a fraction of
    the shorter side, in (0, 1] (default ``CENTER_FRACTION``, 0.875; 1.0 keeps the whole shorter side);
    ``crop_border``: pixels cut off every side first (ObjectNet's 2-px frame). Both backends decode that window.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available; pass device='cpu'")
    if not (is_integer(batch_size) and batch_size >= 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not (is_integer(image_size) and 8 <= image_size <= MAX_IMAGE_SIZE):
        raise ValueError(f"image_size must be an int in 8..{MAX_IMAGE_SIZE}, got {image_size!r}")
    if not (is_integer(seed) and 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be an int in [0, 2**63 - 1], got {seed!r}")
    check_rank(rank, world_size)
    if threads is None:
        threads = default_threads()
    elif not (is_integer(threads) and 1 <= threads <= MAX_THREADS):
        raise ValueError(f"threads must be an int in 1..{MAX_THREADS} or None, got {threads!r}")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear', 'bicubic' or 'nearest', got {interpolation!r}")
    r0, r1 = (float(v) for v in crop_ratio)
    if not 0.0 < r0 <= r1 < float("inf"):
        raise ValueError(f"crop_ratio must be (min, max) aspect ratios with 0 < min <= max, got {tuple(crop_ratio)}")
    if train and (crop_fraction is not None or crop_border != 0):
        raise ValueError("crop_fraction and crop_border set the evaluation crop (train=False); training crops are "
                         "drawn with crop_scale and crop_ratio")
    if crop_fraction is not None and not (is_number(crop_fraction) and 0.0 < crop_fraction <= 1.0):
        raise ValueError(f"crop_fraction must be a number in (0, 1], got {crop_fraction!r}")
    if not (is_integer(crop_border) and 0 <= crop_border <= MAX_IMAGE_SIZE):
        raise ValueError(f"crop_border must be an int in 0..{MAX_IMAGE_SIZE}, got {crop_border!r}")
    lo, hi = (float(v) for v in crop_scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {tuple(crop_scale)}")
    if backend is None:
        backend = "dali" if dali_available() else "torchvision"
        _log_once(f"luab_fast.data: {backend} decode backend" +
                  ("" if backend == "dali" else " (nvidia-dali not importable)"))
    if backend not in ("dali", "torchvision"):
        raise ValueError(f"backend must be 'dali', 'torchvision' or None, got {backend!r}")
    if backend == "dali" and not dali_available():
        raise ValueError("backend='dali' but nvidia-dali is not importable; install nvidia-dali-cuda130 or use "
                         "backend='torchvision'")
    if mixing is not None and not (train and drop_last is not False and batch_size % 2 == 0):
        raise ValueError(f"mixing= pairs sample i with B - 1 - i of full training batches: it needs train=True, "
                         f"drop_last and an even batch_size, got train={train}, drop_last={drop_last}, "
                         f"batch_size={batch_size}")
    images = list_images(source)
    drop = train if drop_last is None else bool(drop_last)
    if drop and len(images) // world_size < batch_size:  # before the stores, headers and decoder are set up
        per = f" over world_size={world_size}" if world_size > 1 else ""
        raise ValueError(f"batch_size {batch_size} is larger than the {len(images):,} images{per}, and drop_last "
                         f"keeps full batches only; lower batch_size or pass drop_last=False")
    from .targets import Targets

    targets = Targets(images, device, byproducts, label_maps, labels, heat_size, heat_sigma, label_box_order)
    return Loader(images, batch_size, train, device, image_size, rank, world_size, seed, backend, drop,
                  channels_last, threads, targets, (lo, hi), mixing, augment, (r0, r1), interpolation,
                  CENTER_FRACTION if crop_fraction is None else float(crop_fraction), int(crop_border))
