"""Crop windows, sampled on the host for a whole batch at once, so every backend decodes exactly the window
the loader reports (and a resumed run draws the same crops).

Windows are integer pixel rectangles ``(y0, x0, h, w)`` of the original image; the loader reports them as
normalised ``(x0, y0, x1, y1)`` boxes (docs/architecture.md conventions).
"""

from __future__ import annotations

import math

import numpy as np

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
CENTER_FRACTION = 0.875  # validation: the centre square of 87.5% of the shorter side (resize 256, crop 224)


def random_resized_windows(sizes: np.ndarray, rng: np.random.Generator, scale=SCALE, ratio=RATIO,
                           attempts: int = 10) -> np.ndarray:
    """int64 [B, 4] (y0, x0, h, w): torchvision's RandomResizedCrop.get_params, vectorised over the batch.

    ``sizes`` int [B, 2] (H, W). Up to ``attempts`` draws of area ∈ scale·H·W and log-uniform aspect ratio;
    the first that fits is placed uniformly; if none fits, the whole image clamped to the ratio range, centred.
    """
    H, W = sizes[:, 0].astype(np.float64), sizes[:, 1].astype(np.float64)
    B = len(sizes)
    area = H * W
    target = area[:, None] * rng.uniform(scale[0], scale[1], (B, attempts))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (B, attempts)))
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    fits = (w > 0) & (h > 0) & (w <= W[:, None]) & (h <= H[:, None])
    first = np.argmax(fits, axis=1)
    found = fits[np.arange(B), first]
    h_ok, w_ok = h[np.arange(B), first], w[np.arange(B), first]
    u = rng.random((B, 2))  # uniform placement: floor(u · (room + 1)) is randint(0, room + 1)
    y0 = np.floor(u[:, 0] * (H - h_ok + 1))
    x0 = np.floor(u[:, 1] * (W - w_ok + 1))
    # fallback (torchvision): whole image, clamped to the ratio range, centred
    in_ratio = W / H
    fw = np.where(in_ratio < ratio[0], W, np.where(in_ratio > ratio[1], np.round(H * ratio[1]), W))
    fh = np.where(in_ratio < ratio[0], np.round(W / ratio[0]), H)
    out = np.where(found[:, None], np.stack([y0, x0, h_ok, w_ok], 1),
                   np.stack([(H - fh) // 2, (W - fw) // 2, fh, fw], 1))
    return out.astype(np.int64)


def center_windows(sizes: np.ndarray, fraction: float = CENTER_FRACTION, border: int = 0) -> np.ndarray:
    """int64 [B, 4] (y0, x0, h, w): the centred square of ``fraction`` of the shorter side, after ``border``
    pixels are cut off every side (ObjectNet's frame): the centre of the image is unchanged by that cut."""
    side = np.maximum(np.floor((sizes.min(1) - 2 * border) * fraction), 1).astype(np.int64)
    return np.stack([(sizes[:, 0] - side) // 2, (sizes[:, 1] - side) // 2, side, side], 1).astype(np.int64)


def windows_to_boxes(windows: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """float32 [B, 4] (x0, y0, x1, y1) normalised to the original image."""
    y0, x0, h, w = (windows[:, k].astype(np.float64) for k in range(4))
    H, W = sizes[:, 0].astype(np.float64), sizes[:, 1].astype(np.float64)
    return np.stack([x0 / W, y0 / H, (x0 + w) / W, (y0 + h) / H], 1).astype(np.float32)
