"""The photometric ops of augment.py as DALI operators, inside the decode pipeline (the DALI backend).

Each layer of a batch's draws is fed as one op id and one value per sample (``external_source``), and a DALI
conditional (``enable_conditionals``) runs the sample's op only: the same per-image dispatch as the torch path
(augment_ops.py), one op per image and layer. The ops are PIL's definitions, as there, on the float pixels of
uint8 values: DALI's ``equalize`` and ``filter`` (Sharpness's SMOOTH kernel) where DALI has the op, DALI's
arithmetic and reductions for the blends (``brightness_contrast`` and ``hsv`` blend towards a fixed centre or
in another colour space, not towards PIL's grey image), posterize, solarize and autocontrast, which DALI has no
operator for. Colour jitter runs as three more layers (brightness, contrast, saturation = Color).
"""

from __future__ import annotations

import numpy as np

from .augment import PHOTOMETRIC, AugmentParams

OP_IDS = {name: k + 1 for k, name in enumerate(PHOTOMETRIC)}  # 0: no op in this layer


def _kind(name: str) -> str:
    return name.replace("Increasing", "").replace("Original", "")


def photometric_layers(x, layers: int, image_size: int):
    """The pipeline's float HWC images → the same after ``layers`` fed layers (names ``aug_op{i}`` and
    ``aug_val{i}``). Call inside a ``pipeline_def(enable_conditionals=True)``."""
    from nvidia.dali import fn, types

    for i in range(layers):
        op = fn.external_source(name=f"aug_op{i}", dtype=types.INT32, ndim=0)
        val = fn.external_source(name=f"aug_val{i}", dtype=types.FLOAT, ndim=0)
        x = _layer(x, op, val, image_size)
    return x


def _layer(x, op, v, size: int):  # one DALI conditional per op kind: a sample runs its own branch only
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    def clip(t):
        return dmath.clamp(dmath.floor(t), 0.0, 255.0)

    def blend(degenerate, t):
        return clip(degenerate + v * (t - degenerate))

    def grey(t):  # PIL's convert("L"): (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16
        return dmath.floor((t[:, :, 0:1] * 19595 + t[:, :, 1:2] * 38470 + t[:, :, 2:3] * 7471 + 32768) / 65536)

    ids = {kind: [k for name, k in OP_IDS.items() if _kind(name) == kind] for kind in
           {_kind(n) for n in PHOTOMETRIC}}

    def any_of(kind):
        first, *rest = ids[kind]
        cond = op == first
        for k in rest:
            cond = cond | (op == k)
        return cond

    if any_of("Brightness"):
        x = clip(x * v)
    elif any_of("Color"):
        x = blend(grey(x), x)
    elif any_of("Contrast"):
        x = blend(dmath.floor(fn.reductions.mean(grey(x)) + 0.5), x)
    elif any_of("Sharpness"):
        kernel = np.ones((3, 3, 1), np.float32)  # PIL's SMOOTH: centre 5, the rest 1, / 13, rounded; HWC filter
        kernel[1, 1] = 5.0
        smooth = dmath.clamp(dmath.floor(fn.filter(x, types.Constant(kernel[..., 0] / 13.0)) + 0.5), 0.0, 255.0)
        inner = np.zeros((size, size, 1), np.float32)
        inner[1:-1, 1:-1] = 1.0  # PIL keeps the border pixels
        mask = types.Constant(inner)
        x = blend(x + mask * (smooth - x), x)
    elif any_of("Posterize"):
        step = dmath.pow(2.0, 8.0 - dmath.clamp(v, 0.0, 8.0))
        x = dmath.floor(x / step) * step
    elif any_of("SolarizeAdd"):
        x = x + fn.cast(x < 128.0, dtype=types.FLOAT) * (dmath.min(x + v, 255.0) - x)
    elif any_of("Solarize"):
        x = x + fn.cast(x >= v, dtype=types.FLOAT) * (255.0 - 2.0 * x)
    elif any_of("Invert"):
        x = 255.0 - x
    elif any_of("Equalize"):
        x = fn.cast(fn.equalize(fn.cast(x, dtype=types.UINT8)), dtype=types.FLOAT)
    elif any_of("AutoContrast"):  # torchvision's: per channel, (x − min)·255/(max − min), unchanged where flat
        lo, hi = fn.reductions.min(x, axes=[0, 1]), fn.reductions.max(x, axes=[0, 1])
        flat = fn.cast(hi <= lo, dtype=types.FLOAT)
        scale = flat + (1.0 - flat) * 255.0 / dmath.max(hi - lo, 1.0)
        x = dmath.clamp(dmath.floor((x - (1.0 - flat) * lo) * scale), 0.0, 255.0)
    else:
        x = x + 0.0  # no op in this layer (a branch must give x a value)
    return x


def feed(pipe, params: AugmentParams | None, layers: int, n: int) -> None:
    """Feeds the batch's photometric layers (padded with "no op" to the pipeline's ``layers``; ``n`` samples
    including any padding of a partial batch)."""
    photo = list(params.photo) if params is not None else []
    for i in range(layers):
        ids = np.zeros(n, np.int32)
        vals = np.zeros(n, np.float32)
        if i < len(photo):
            names, args = photo[i]
            m = len(names)
            ids[:m] = [OP_IDS.get(name, 0) for name in names]
            vals[:m] = args
            ids[m:], vals[m:] = ids[m - 1], vals[m - 1]  # the padding repeats the last sample, as its pixels do
        pipe.feed_input(f"aug_op{i}", list(ids))
        pipe.feed_input(f"aug_val{i}", list(vals))
