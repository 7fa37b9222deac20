"""The demo's images: scikit-learn's 8×8 handwritten digits, scaled up smoothly and placed at a random
position and scale on a 96×96 RGB canvas over a striped background texture that belongs to a class
(its own stripe orientation and a faint tint of its own hue, under pixel noise) — the spurious cue. Which
class's background an image gets is decided by ``plan_images`` (correlated with the digit in train/iid,
independent of it in ood).

The cue's strength is tuned for the 3-epoch CPU demo (``python -m luab_fast.train``): with saturated
stripes, 90% correlation and smaller glyphs a resnet10t learned the background alone (ood top-1 at chance,
with or without byproducts); the muted tint, the noise, the larger glyphs and the demo's 50% correlation
leave the digit learnable in that budget while the background still pays off in train/iid.
"""

from __future__ import annotations

import colorsys
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

CANVAS = 96
N_CLASSES = 10
SPLITS = ("train", "iid", "ood")
WNIDS = [f"n{k:08d}" for k in range(N_CLASSES)]  # synthetic wnid-like class ids: stems are <wnid>_<n>
TRAIN_DIGIT_SHARE = 0.7  # per class, this share of sklearn's digits feeds train; the rest iid and ood
GLYPH = (40, 72)  # side of the scaled 8×8 glyph, px (the inked digit inside it is a little smaller)
INK_THRESHOLD = 0.3  # alpha above which a pixel counts as the digit, for its box
JPEG_QUALITY = 90

_YY, _XX = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32)


def _palette() -> np.ndarray:
    """float32 [K, 2, 3]: per class a light and a dark stripe colour, greyish with a faint tint of the
    class's own hue (hues 36° apart)."""
    out = np.zeros((N_CLASSES, 2, 3), np.float32)
    for k in range(N_CLASSES):
        h = k / N_CLASSES
        out[k, 0] = colorsys.hsv_to_rgb(h, 0.12, 0.70)
        out[k, 1] = colorsys.hsv_to_rgb(h, 0.20, 0.55)
    return out


PALETTE = _palette()
ANGLES = np.pi * np.arange(N_CLASSES) / N_CLASSES  # stripe orientation per class, 18° apart
NOISE = 0.05  # std of the background's per-pixel Gaussian noise


def background(rng: np.random.Generator, cls: int) -> np.ndarray:
    """float32 [96, 96, 3] in [0, 1]: class ``cls``'s stripes with a random phase, a slightly jittered
    angle and period (so no two backgrounds are identical) and pixel noise of std ``NOISE``."""
    theta = ANGLES[cls] + rng.normal(0, 0.04)
    period = rng.uniform(7.0, 11.0)
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.5 + 0.5 * np.sin((_XX * np.cos(theta) + _YY * np.sin(theta)) * (2 * np.pi / period) + phase)
    light, dark = PALETTE[cls]
    img = light + (dark - light) * wave[..., None]
    return img + rng.normal(0, NOISE, img.shape).astype(np.float32)


def glyph_alpha(digit: np.ndarray, w: int, h: int) -> np.ndarray:
    """float32 [h', w'] coverage in [0, 1] of an 8×8 digit (values 0–16) scaled to a ``w``×``h`` glyph
    by bicubic interpolation; a zero border is added first so the strokes fade out instead of being
    cut at the glyph's edge (the result is 10/8 of the glyph size)."""
    padded = np.pad(digit.astype(np.float32) / 16.0, 1)
    big = Image.fromarray(padded, mode="F").resize((round(w * 10 / 8), round(h * 10 / 8)), Image.BICUBIC)
    return np.clip((np.asarray(big) - 0.1) * 1.4, 0.0, 1.0)  # sharpen the soft edge a little


def plan_images(rng: np.random.Generator, counts: dict[str, int], correlation: float,
                targets: np.ndarray) -> list[dict]:
    """Which digit (index into ``targets`` int [1797]), class and background each image gets, and its
    stem ``<wnid>_<n>`` (n counts over all splits): classes balanced per split; each split draws
    its digits by cycling through a shuffled per-class pool (train: ``TRAIN_DIGIT_SHARE`` of the digits,
    iid and ood: the held-out rest, so test digits are never seen in training)."""
    pools: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for k in range(N_CLASSES):
        idx = rng.permutation(np.flatnonzero(targets == k))
        cut = int(round(len(idx) * TRAIN_DIGIT_SHARE))
        pools["train"].append(idx[:cut])
        pools["test"].append(idx[cut:])
    plan, n = [], 0
    for split in SPLITS:
        pool = pools["train" if split == "train" else "test"]
        classes = rng.permutation(np.arange(counts[split]) % N_CLASSES)
        used = np.zeros(N_CLASSES, np.int64)
        for k in classes.tolist():
            digit = int(pool[k][used[k] % len(pool[k])])
            used[k] += 1
            if split == "ood":
                bg = int(rng.integers(N_CLASSES))  # independent of the digit
            elif rng.random() < correlation:
                bg = k
            else:
                bg = (k + int(rng.integers(1, N_CLASSES))) % N_CLASSES  # uniform over the other classes
            n += 1
            plan.append({"split": split, "stem": f"{WNIDS[k]}_{n}", "class": k, "digit": digit, "background": bg})
    return plan


@dataclass
class Rendered:
    """One rendered image: JPEG bytes and the digit's box in canvas pixels (x0, y0 inclusive; x1, y1
    exclusive) — the tight box of pixels whose ink coverage exceeds ``INK_THRESHOLD``."""

    jpeg: bytes
    box: tuple[int, int, int, int]


def render(rng: np.random.Generator, digit: np.ndarray, bg_class: int) -> Rendered:
    """A 96×96 RGB image of ``digit`` ([8, 8], 0–16) over class ``bg_class``'s background."""
    side = int(rng.integers(GLYPH[0], GLYPH[1] + 1))
    aspect = rng.uniform(0.85, 1.15)  # handwriting is not square: mild independent x/y scale
    alpha = glyph_alpha(digit, max(8, round(side * min(aspect, 1.0))), max(8, round(side / max(aspect, 1.0))))
    ah, aw = alpha.shape
    ah, aw = min(ah, CANVAS), min(aw, CANVAS)
    alpha = alpha[:ah, :aw]
    y, x = int(rng.integers(0, CANVAS - ah + 1)), int(rng.integers(0, CANVAS - aw + 1))
    img = background(rng, bg_class)
    # ink light or dark at random, independent of the class, so colour is no cue for the digit
    ink = np.float32(rng.uniform(0.9, 1.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.1))
    region = img[y:y + ah, x:x + aw]
    img[y:y + ah, x:x + aw] = region * (1 - alpha[..., None]) + ink * alpha[..., None]
    buf = io.BytesIO()
    Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), "RGB").save(
        buf, format="JPEG", quality=JPEG_QUALITY)
    rows, cols = np.flatnonzero((alpha > INK_THRESHOLD).any(1)), np.flatnonzero((alpha > INK_THRESHOLD).any(0))
    if rows.size == 0:  # an empty glyph cannot happen with sklearn's digits; keep the box well-formed anyway
        box = (x, y, x + aw, y + ah)
    else:
        box = (x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)
    return Rendered(buf.getvalue(), box)
