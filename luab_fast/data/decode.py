"""The two decode backends: each turns a batch of (file, crop window, flip) into a normalised image batch.

``dali``: NVIDIA DALI, fed the encoded files and the host-sampled windows through ``external_source``;
``decoders.image_slice`` decodes only the window (``device="mixed"``: nvJPEG on the GPU; ``"cpu"`` with
``device_id=None`` on machines without one), then resize, mirror, normalise. ``torchvision``: PIL decode,
crop, resize, flip in a thread pool (PIL releases the GIL), normalised with torch on the target device.
Both apply the same window and flip; their pixels differ only by decoder and resampling filter.

With augmentation (``augment=``, a batch's augment.AugmentParams) both also apply one affine per sample after the
flip, filled with timm's mean colour (PIL ``Image.transform``; DALI ``warp_affine``, bilinear or nearest only:
DALI's warp has no bicubic filter, so ``bicubic`` resizes bicubically and warps bilinearly there), then the
photometric ops on the uint8 values before normalising (torch on the device, augment_ops.py; DALI operators in
the pipeline, augment_dali.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np
import torch

from .._cli import DataError
from .augment import MEAN_FILL, AugmentParams

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PIL_FILTERS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "NEAREST"}
DALI_FILTERS = {"bilinear": "INTERP_LINEAR", "bicubic": "INTERP_CUBIC", "nearest": "INTERP_NN"}


def image_sizes(files: Sequence[str], threads: int = 8) -> np.ndarray:
    """int64 [N, 2] (H, W) from the files' headers (no decode); ValueError naming every unreadable file."""
    from PIL import Image

    def size(f: str) -> tuple[int, int] | str:
        try:
            with Image.open(f) as im:
                return im.size[1], im.size[0]
        except Exception as e:  # zero-byte, not an image, truncated header, unreadable: reported below, all at once
            return _reason(e, f)

    with ThreadPoolExecutor(threads) as pool:
        sizes = list(pool.map(size, files))
    bad = [(f, s) for f, s in zip(files, sizes) if isinstance(s, str)]
    if bad:
        raise DataError(f"{len(bad)} of {len(files)} images cannot be read; fix or remove them: "
                        + "; ".join(f"{f} ({why})" for f, why in bad[:5]) + ("; ..." if len(bad) > 5 else ""))
    return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)


def _reason(e: BaseException, f: str) -> str:
    """The error's type and message, without the file name PIL repeats in it (the caller names the file)."""
    return f"{type(e).__name__}: {str(e).replace(repr(str(f)), '').replace(str(f), '').strip(' :')}"


class TorchvisionDecoder:
    """PIL decode + crop + resize (antialiased; bilinear unless ``interpolation``) + flip (+ affine);
    uint8 → normalised float on ``device``."""

    def __init__(self, image_size: int, device: torch.device, threads: int, interpolation: str = "bilinear") -> None:
        from PIL import Image

        self.image_size, self.device = image_size, device
        self.filter = getattr(Image, PIL_FILTERS[interpolation])
        self.pool = ThreadPoolExecutor(max(1, threads))
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255

    def _one(self, args) -> np.ndarray:
        from PIL import Image

        f, (y0, x0, h, w), flip, matrix = args
        try:  # costs nothing unless it raises; then the error names the file (PIL's often does not)
            with Image.open(f) as im:
                im = im.convert("RGB").crop((int(x0), int(y0), int(x0 + w), int(y0 + h)))
                im = im.resize((self.image_size, self.image_size), self.filter)
                if flip:
                    im = im.transpose(Image.FLIP_LEFT_RIGHT)
                if matrix is not None:  # timm's geometric ops are PIL affine transforms of the same kind
                    im = im.transform(im.size, Image.AFFINE, tuple(float(v) for v in matrix.reshape(6)),
                                      resample=self.filter, fillcolor=MEAN_FILL)
                return np.asarray(im)
        except Exception as e:
            raise DataError(f"image {f} cannot be decoded ({_reason(e, f)}); fix or remove it") from e

    def __call__(self, files: Sequence[str], windows: np.ndarray, flips: np.ndarray,
                 augment: Optional[AugmentParams] = None) -> torch.Tensor:
        affine = None if augment is None else augment.pixel_inverse(self.image_size)
        matrices = [None] * len(files) if affine is None else list(affine)
        arrays = list(self.pool.map(self._one, zip(files, windows, flips, matrices)))
        if self.device.type == "cuda":
            # stacked into pinned memory: an asynchronous copy, where one from pageable memory waits for the
            # GPU's queue (the step in flight) first. The caching host allocator keeps the block until the
            # copy is done, so a fresh buffer per batch is cheap and never overwritten early.
            host = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.uint8, pin_memory=True)
            np.stack(arrays, out=host.numpy())
        else:
            host = torch.from_numpy(np.stack(arrays))
        x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        if augment is not None and augment.has_photo:
            from .augment_ops import host_to, photometric

            x = photometric(x, augment, lambda a: host_to(a, self.device))
        return (x - self.mean) / self.std

    def close(self) -> None:
        self.pool.shutdown(wait=False)


class DaliDecoder:
    """A DALI pipeline fed one batch at a time (``feed_input`` + ``run``): windows and flips come from the
    host, so its crops are exactly the reported ones, on the GPU and in CPU-only mode alike.

    ``warp``: the pipeline takes one affine per sample (``warp_affine`` after the flip, filled with timm's mean
    colour: warped as the difference from it, filled with 0, rounded as PIL's uint8); ``photo_layers``: it runs
    that many layers of photometric ops (augment_dali.py) before normalising."""

    def __init__(self, batch_size: int, image_size: int, device: torch.device, threads: int, seed: int,
                 interpolation: str = "bilinear", warp: bool = False, photo_layers: int = 0) -> None:
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali import math as dmath

        from .augment_dali import photometric_layers

        gpu = device.type == "cuda"
        self.device, self.batch_size, self.image_size = device, batch_size, image_size
        self.warp, self.photo_layers = warp, photo_layers
        resize_filter = getattr(types, DALI_FILTERS[interpolation])
        warp_filter = types.INTERP_NN if interpolation == "nearest" else types.INTERP_LINEAR

        @pipeline_def(batch_size=batch_size, num_threads=max(1, threads),
                      device_id=(device.index if device.index is not None else torch.cuda.current_device())
                      if gpu else None, seed=seed, exec_async=False, exec_pipelined=False,
                      enable_conditionals=photo_layers > 0)
        def pipe():
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            anchor = fn.external_source(name="anchor", dtype=types.INT64, ndim=1)
            shape = fn.external_source(name="shape", dtype=types.INT64, ndim=1)
            mirror = fn.external_source(name="mirror", dtype=types.INT32, ndim=0)
            images = fn.decoders.image_slice(jpegs, anchor, shape, axes=[0, 1], device="mixed" if gpu else "cpu",
                                             output_type=types.RGB)
            images = fn.resize(images, size=[image_size, image_size], interp_type=resize_filter, antialias=True)
            if warp:
                matrix = fn.external_source(name="matrix", dtype=types.FLOAT, ndim=2)
                images = fn.flip(images, horizontal=mirror)
                fill = types.Constant(np.asarray(MEAN_FILL, np.float32))  # in the trace (DALI's conditionals)
                images = fn.cast(images, dtype=types.FLOAT) - fill
                images = fn.warp_affine(images, matrix=matrix, fill_value=0.0, interp_type=warp_filter) + fill
                images = dmath.clamp(dmath.floor(images + 0.5), 0.0, 255.0)
                mirror = 0
            if photo_layers:
                if not warp:
                    images = fn.cast(images, dtype=types.FLOAT)
                images = photometric_layers(images, photo_layers, image_size)
            return fn.crop_mirror_normalize(images, mirror=mirror, mean=[m * 255 for m in MEAN],
                                            std=[s * 255 for s in STD], output_layout="CHW", dtype=types.FLOAT)

        self.pipe = pipe()
        self.pipe.build()

    def __call__(self, files: Sequence[str], windows: np.ndarray, flips: np.ndarray,
                 augment: Optional[AugmentParams] = None) -> torch.Tensor:
        """As :meth:`TorchvisionDecoder.__call__`; the pipeline must have been built for the augmentation
        (``warp`` for an affine, ``photo_layers`` for photometric ops)."""
        n = len(files)
        affine = None if augment is None else augment.pixel_inverse(self.image_size)
        if (affine is not None and not self.warp) or (augment is not None and augment.has_photo
                                                      and len(augment.photo) > self.photo_layers):
            raise ValueError("this DaliDecoder was not built for the batch's augmentation (warp / photo_layers)")
        if self.warp and affine is None:
            affine = np.tile(np.eye(3, dtype=np.float32)[:2], (n, 1, 1))
        if n != self.batch_size:  # a partial last batch (drop_last=False): pad, then cut
            pad = self.batch_size - n
            files, windows, flips = list(files) + [files[-1]] * pad, np.concatenate(
                [windows, np.repeat(windows[-1:], pad, 0)]), np.concatenate([flips, np.repeat(flips[-1:], pad)])
            if self.warp:
                affine = np.concatenate([affine, np.repeat(affine[-1:], pad, 0)])
        self.pipe.feed_input("jpegs", [np.fromfile(f, dtype=np.uint8) for f in files])
        self.pipe.feed_input("anchor", [np.ascontiguousarray(w[:2]) for w in windows])
        self.pipe.feed_input("shape", [np.ascontiguousarray(w[2:]) for w in windows])
        self.pipe.feed_input("mirror", [np.int32(f) for f in flips])
        if self.warp:
            self.pipe.feed_input("matrix", [np.ascontiguousarray(m, dtype=np.float32) for m in affine])
        if self.photo_layers:
            from .augment_dali import feed

            feed(self.pipe, augment, self.photo_layers, self.batch_size)
        try:
            (out,) = self.pipe.run()
        except RuntimeError as e:
            raise _decode_error(e, files) from e
        return _to_torch(out, self.device)[:n]

    def close(self) -> None:
        del self.pipe


def _decode_error(e: RuntimeError, files: Sequence[str]) -> Exception:
    """DALI's decode failure ("Failed to decode sample #i") as a ValueError naming the batch's file i (the pipeline
    is unusable after it); any other failure of the pipeline is returned as it is."""
    import re

    m = re.search(r"[^\n]*decode sample #(\d+)[^\n]*", str(e))
    if m and int(m.group(1)) < len(files):
        return DataError(f"image {files[int(m.group(1))]} cannot be decoded (DALI: {m.group(0).strip(' :')}); "
                          f"fix or remove it")
    if "decode" in str(e).lower():
        return DataError(f"an image of this batch cannot be decoded (DALI: {str(e).strip().splitlines()[-1]}); "
                          f"the batch's files: {', '.join(files[:8])}{', ...' if len(files) > 8 else ''}")
    return e


def _to_torch(batch, device: torch.device) -> torch.Tensor:
    """A dense DALI TensorList → a torch tensor on ``device`` (one copy)."""
    from nvidia.dali.plugin.pytorch import feed_ndarray

    t = batch.as_tensor()
    out = torch.empty(t.shape(), dtype=torch.float32, device=device)
    feed_ndarray(t, out, cuda_stream=torch.cuda.current_stream(device) if device.type == "cuda" else None)
    return out
