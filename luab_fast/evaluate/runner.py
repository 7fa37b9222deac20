"""Scoring one model on one split: the library's loader (DALI where installed, torchvision otherwise), decoding
the centre crop of the split's kind (``Kind.crop``; ``--crop-pct`` overrides its fraction), channels_last and bf16
autocast on CUDA, and what the split's kind keeps of each batch (its top-5 class indices by default) written into
one device tensor by row, so the loop never waits for the GPU; one copy to the host at the end."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..data.loader import Loader, build_loader
from .kinds import REGISTRY, Options, Split


@dataclass(frozen=True)
class LoaderSettings:
    batch_size: int = 256
    image_size: int = 224
    backend: Optional[str] = None
    threads: Optional[int] = None
    crop_fraction: Optional[float] = None  # --crop-pct: every split's (None: its kind's)
    interpolation: str = "bilinear"  # --interpolation: the resize filter


def transform(split: Split, settings: LoaderSettings) -> dict[str, Any]:
    """How the split's images are decoded, as results.json records it: the crop (the kind's, or --crop-pct's
    fraction), the resize filter and the side."""
    fraction, border = REGISTRY[split.kind].crop(Options(crop_fraction=settings.crop_fraction))
    return {"image_size": settings.image_size, "crop_fraction": fraction, "crop_border": border,
            "interpolation": settings.interpolation}


def split_loader(split: Split, device: torch.device, settings: LoaderSettings) -> Loader:
    """The split's images in their fixed order (labels: the kind's, 0 where it scores label sets), decoded as
    ``transform`` says."""
    labels = np.maximum(split.labels, 0)
    how = transform(split, settings)
    return build_loader((list(split.files), labels), settings.batch_size, train=False, device=device,
                        image_size=settings.image_size, backend=settings.backend, threads=settings.threads,
                        drop_last=False, channels_last=device.type == "cuda", crop_fraction=how["crop_fraction"],
                        crop_border=how["crop_border"], interpolation=how["interpolation"])


@torch.no_grad()
def predict(model: Callable[[torch.Tensor], Any], split: Split, loader: Loader, num_classes: int) -> np.ndarray:
    """[N, ...] in row order: what the split's kind keeps of each image (its top-5 class indices by default)."""
    kind = REGISTRY[split.kind]
    device = loader.device
    mask = torch.from_numpy(split.mask).to(device) if split.mask is not None else None
    k = min(5, num_classes if mask is None else len(mask))
    out: Optional[torch.Tensor] = None
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    for batch in loader:
        with autocast:
            kept = kind.outputs(model, batch["images"], batch["labels"], mask, k)
        if out is None:
            out = torch.empty((len(split.files), *kept.shape[1:]), dtype=kept.dtype, device=device)
        out[batch["rows"]] = kept
    assert out is not None  # a split holds at least one image (the kinds refuse an empty one)
    return out.cpu().numpy()


def score(model: Callable[[torch.Tensor], Any], split: Split, loader: Loader, num_classes: int) -> dict[str, Any]:
    """The split's metrics (its kind's ``score``)."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        return REGISTRY[split.kind].score(predict(model, split, loader, num_classes), split)
    finally:
        if was_training:
            model.train()
