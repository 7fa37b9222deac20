"""The photometric ops of augment.py for the torchvision backend (DALI runs its own: augment_dali.py) and random
erasing for both, batched on the device with per-image parameters.

The ops follow PIL's definitions, which timm applies (ImageEnhance blends with a degenerate image: black for
Brightness, the L grey for Color, the mean L for Contrast, the SMOOTH filter for Sharpness; ImageOps for the
rest), on float images holding uint8 values 0..255, floored and clipped after each op as PIL's uint8 images are.
torchvision's tensor ops define the same blends but take one factor per call; a batch with one factor per image
needs them vectorised, so the blends are written here; equalize and autocontrast, which take no parameter, are
torchvision's own. None of these ops moves a pixel, so none touches the targets.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .augment import AugmentParams


def _clip(x: torch.Tensor) -> torch.Tensor:
    return x.floor().clamp_(0.0, 255.0)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """PIL Image.blend(degenerate, x, f) with one factor per image."""
    return _clip(degenerate + f.view(-1, 1, 1, 1) * (x - degenerate))


def _grey(x: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W]: PIL's convert("L"), (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16."""
    r, g, b = x.unbind(1)
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)[:, None]


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageFilter.SMOOTH (3×3, centre 5, the rest 1, /13, rounded), the border pixels kept."""
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5.0
    inner = torch.nn.functional.conv2d(x.reshape(-1, 1, *x.shape[2:]), (k / 13.0)[None, None])
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = torch.floor(inner.view(x.shape[0], x.shape[1], *inner.shape[2:]) + 0.5).clamp(0, 255)
    return out


def brightness(x, f):
    return _blend(torch.zeros_like(x), x, f)


def color(x, f):
    return _blend(_grey(x).expand_as(x), x, f)


def contrast(x, f):
    mean = torch.floor(_grey(x).mean((1, 2, 3), keepdim=True) + 0.5)  # PIL: int(ImageStat mean + 0.5)
    return _blend(mean.expand_as(x), x, f)


def sharpness(x, f):
    return _blend(_smooth(x), x, f)


def posterize(x, bits):
    keep = bits.clamp(0, 8).view(-1, 1, 1, 1)
    step = torch.pow(2.0, 8.0 - keep)  # ImageOps.posterize: clear the 8 - bits low bits
    return torch.floor(x / step) * step


def solarize(x, thresh):
    return torch.where(x >= thresh.view(-1, 1, 1, 1), 255.0 - x, x)


def solarize_add(x, add):  # timm: below 128, add (capped at 255)
    return torch.where(x < 128.0, (x + add.view(-1, 1, 1, 1)).clamp(max=255.0), x)


def invert(x, _):
    return 255.0 - x


def _uint8_op(fn: Callable) -> Callable:
    def op(x, _):
        return fn(x.to(torch.uint8)).to(x.dtype)

    return op


def _ops() -> dict[str, Callable]:
    import torchvision.transforms.v2.functional as tvf

    enhance = {"Color": color, "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness}
    ops = {**enhance, **{k + "Increasing": v for k, v in enhance.items()}}
    ops.update({"Posterize": posterize, "PosterizeIncreasing": posterize, "PosterizeOriginal": posterize,
                "Solarize": solarize, "SolarizeIncreasing": solarize, "SolarizeAdd": solarize_add,
                "Invert": invert, "Equalize": _uint8_op(tvf.equalize), "AutoContrast": _uint8_op(tvf.autocontrast)})
    return ops


def photometric(x: torch.Tensor, params: AugmentParams, to_device: Callable[[np.ndarray], torch.Tensor]
                ) -> torch.Tensor:
    """float [B, 3, H, W] of uint8 values → the same with the batch's photometric ops (colour jitter included);
    one batched call per distinct op and layer. ``to_device`` moves a host array to ``x``'s device."""
    ops = _ops() if params.photo else {}
    x = x.contiguous()  # the decoders' HWC → CHW view: strided rows make every indexed op ~25× slower on a CPU
    for names, args in params.photo:
        for name in sorted(set(names.tolist()) - {""}):
            idx = np.flatnonzero(names == name)
            it = to_device(idx.astype(np.int64))
            x[it] = ops[name](x[it], to_device(args[idx].astype(np.float32)))
    return x


def erase(x: torch.Tensor, params: AugmentParams, mode: str, to_device: Callable) -> torch.Tensor:
    """timm's RandomErasing on normalised images: each drawn box filled with 0 ("const"), one normal value per
    channel ("rand") or per pixel ("pixel"), from a generator seeded by the batch's draw."""
    if params.erase is None:
        return x
    rects = to_device(params.erase)  # [B, K, 4]
    gen = torch.Generator(device=x.device).manual_seed(params.erase_seed)
    B, C, H, W = x.shape
    yy = torch.arange(H, device=x.device).view(1, H, 1)
    xx = torch.arange(W, device=x.device).view(1, 1, W)
    for k in range(rects.shape[1]):
        top, left, h, w = (rects[:, k, j].view(B, 1, 1) for j in range(4))
        mask = ((yy >= top) & (yy < top + h) & (xx >= left) & (xx < left + w))[:, None]
        if mode == "const":
            fill = torch.zeros((), dtype=x.dtype, device=x.device)
        else:
            shape = (B, C, 1, 1) if mode == "rand" else (B, C, H, W)
            fill = torch.randn(shape, generator=gen, dtype=x.dtype, device=x.device)
        x = torch.where(mask, fill, x)
    return x


def host_to(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device`` without a sync (pinned, asynchronous on a GPU; as the loader's batches)."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    return t if device.type != "cuda" else t.pin_memory().to(device, non_blocking=True)


def target_kwargs(params: AugmentParams | None, rows: np.ndarray, to_device: Callable) -> dict | None:
    """``Targets``' ``augment`` argument for a batch with a geometric augmentation (else None)."""
    if params is None or params.inverse is None:
        return None
    return {"forward": to_device(params.forward), "inverse": to_device(params.inverse[:, :2].astype(np.float32)),
            "host_rows": rows, "to_device": to_device}
