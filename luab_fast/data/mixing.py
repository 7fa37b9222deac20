"""CutMix / Mixup of training batches (``--mixup``, ``--cutmix``, ...), with timm's ``Mixup`` semantics and flag
names, carrying every target kind (the rules: mix_targets.py, docs/data-and-training.md "Mixing").

The parameters (which samples mix, λ, CutMix or Mixup, the box) are drawn on the host per (seed, epoch, rank,
batch), like the crop windows, from their own numpy stream: a seed fixes them, a resumed run sees the same ones,
and nothing waits for the device. The pixels and the targets are then mixed on the device with torch ops.

As timm (timm/data/mixup.py, ``Mixup``): sample i is mixed with its partner B − 1 − i (the batch flipped); λ ~
Beta(α, α) with α = --mixup or --cutmix (--mixup-switch-prob picks CutMix when both are on), applied with
probability --mixup-prob; the CutMix box is a square of side int(S·√(1 − λ)) centred uniformly and clipped to
the image (or, with --cutmix-minmax, a rectangle of uniform sides in [min·S, max·S)), and λ is corrected to
1 − box area / image area. --mixup-mode: one draw per batch, per pair (i and B − 1 − i share it), or per element.
timm draws with the global ``np.random``; here every draw comes from a ``np.random.Generator`` keyed by the batch
(timm's ``rand_bbox`` / ``rand_bbox_minmax`` cannot take one), which is what makes the draws resumable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from . import mix_targets

MODES = ("batch", "pair", "elem")
RELABEL_RULES = ("mix", "region")
MIX_STREAM = 0x6D6978  # "mix": the mixing draws' own stream beside the crop windows' (same batch key otherwise)


@dataclass(frozen=True)
class MixParams:
    """One batch's mixing, per sample (host arrays)."""

    lam: np.ndarray  # float32 [B]: the weight of the sample's own image (CutMix: 1 − box area / image area)
    cut: np.ndarray  # bool [B]: the partner's box is pasted (CutMix) rather than blended (Mixup)
    box: np.ndarray  # int64 [B, 4]: (yl, yh, xl, xh) pixel rows / columns of the pasted box; 0s without CutMix


class Mixing:
    """Mixes a training batch in place (``__call__``); None of it runs for evaluation loaders."""

    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0, cutmix_minmax: Optional[Sequence[float]] = None,
                 prob: float = 1.0, switch_prob: float = 0.5, mode: str = "batch", off_epoch: int = 0,
                 epochs: int = 0, relabel: str = "mix") -> None:
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0 <= cutmix_minmax[0] < cutmix_minmax[1] <= 1:
                raise ValueError(f"cutmix_minmax must be (min, max) with 0 <= min < max <= 1, got {cutmix_minmax}")
            cutmix = 1.0  # timm forces α = 1 with minmax (λ then only decides whether a sample mixes)
        if not (mixup >= 0 and cutmix >= 0 and mixup + cutmix > 0):
            raise ValueError(f"mixup and cutmix must be alphas >= 0, one of them > 0, got {mixup}, {cutmix}")
        if not (0 <= prob <= 1 and 0 <= switch_prob <= 1):
            raise ValueError(f"prob and switch_prob must be in [0, 1], got {prob}, {switch_prob}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if relabel not in RELABEL_RULES:
            raise ValueError(f"relabel must be one of {RELABEL_RULES}, got {relabel!r}")
        self.mixup, self.cutmix, self.minmax = float(mixup), float(cutmix), cutmix_minmax
        self.prob, self.switch_prob, self.mode, self.relabel = float(prob), float(switch_prob), mode, relabel
        self.off_from = epochs - off_epoch if off_epoch else None  # ReLabel: off when epoch >= epochs − off_epoch

    @classmethod
    def from_config(cls, cfg: Any) -> Optional["Mixing"]:
        """The trainer's mixing (``TrainConfig``'s --mixup... options), or None when neither is on."""
        if not (cfg.mixup > 0 or cfg.cutmix > 0 or cfg.cutmix_minmax is not None):
            return None
        return cls(cfg.mixup, cfg.cutmix, cfg.cutmix_minmax, cfg.mixup_prob, cfg.mixup_switch_prob, cfg.mixup_mode,
                   cfg.mixup_off_epoch, cfg.epochs, cfg.cutmix_relabel)

    def active(self, epoch: int) -> bool:
        return self.off_from is None or epoch < self.off_from

    # -- host: the draws ---------------------------------------------------------------------------------
    def draw(self, batch_size: int, image_size: int, key: Sequence[int]) -> MixParams:
        """The parameters of one batch of ``batch_size`` crops of side ``image_size``; ``key`` = (seed, epoch,
        rank, batch index)."""
        if batch_size % 2:  # timm asserts it too: the middle sample would be its own partner
            raise ValueError(f"mixing pairs sample i with B - 1 - i: the batch size must be even, got {batch_size}")
        rng = np.random.default_rng([*map(int, key), MIX_STREAM])
        n = {"batch": 1, "pair": batch_size // 2, "elem": batch_size}[self.mode]
        on = rng.random(n) < self.prob
        both = self.mixup > 0 and self.cutmix > 0
        cut = rng.random(n) < self.switch_prob if both else np.full(n, self.cutmix > 0)
        alpha = np.where(cut, self.cutmix, self.mixup)  # > 0 wherever used; the floor only keeps beta() defined
        lam = np.where(on, rng.beta(np.maximum(alpha, 1e-12), np.maximum(alpha, 1e-12)), 1.0)
        cut &= lam != 1.0
        box = np.zeros((n, 4), np.int64)
        if cut.any():
            box[cut] = self._boxes(rng, lam[cut], image_size)
            (yl, yh, xl, xh), area = box.T, image_size * image_size
            lam = np.where(cut, 1.0 - (yh - yl) * (xh - xl) / area, lam)  # timm's correct_lam
            cut &= lam != 1.0  # an empty box pastes nothing
            box[~cut] = 0
        if self.mode == "batch":
            lam, cut, box = (np.repeat(a, batch_size, 0) for a in (lam, cut, box))
        elif self.mode == "pair":
            lam, cut, box = (np.concatenate([a, a[::-1]]) for a in (lam, cut, box))
        return MixParams(lam.astype(np.float32), cut, box)

    def _boxes(self, rng: np.random.Generator, lam: np.ndarray, size: int) -> np.ndarray:
        """[n, 4] (yl, yh, xl, xh): timm's ``rand_bbox`` (margin 0) or ``rand_bbox_minmax`` on a square image."""
        n = len(lam)
        if self.minmax is None:
            side = (size * np.sqrt(1.0 - lam)).astype(np.int64)
            cy, cx = rng.integers(0, size, n), rng.integers(0, size, n)
            lo, hi = side // 2, (side + 1) // 2  # around the centre, then clipped to the image
            return np.clip(np.stack([cy - lo, cy + hi, cx - lo, cx + hi], 1), 0, size)
        lo, hi = int(size * self.minmax[0]), int(size * self.minmax[1])
        h, w = rng.integers(lo, hi, n), rng.integers(lo, hi, n)
        yl, xl = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        return np.stack([yl, yl + h, xl, xl + w], 1)

    # -- device: the mixing ------------------------------------------------------------------------------
    def __call__(self, batch: dict[str, torch.Tensor], targets: Any, epoch: int, key: Sequence[int],
                 to_device: Callable[[np.ndarray], torch.Tensor]) -> None:
        """Mixes ``batch`` (the loader's dict, targets included) in place. ``target`` always leaves as float32
        [B, C] (one step signature, mixed or not; label smoothing stays the loss's: it is linear, so smoothing
        the mixed target equals timm's mixing of smoothed one-hots)."""
        num_classes = targets.num_classes
        if not self.active(epoch):
            batch["target"] = mix_targets.soft(batch["target"], num_classes)
            return
        images = batch["images"]
        p = self.draw(images.shape[0], images.shape[-1], key)
        lam, cut, box = to_device(p.lam), to_device(p.cut), to_device(p.box)
        size = images.shape[-1]
        batch["images"] = mix_targets.mix_images(images, lam, cut, box)
        if self.relabel == "region" and targets.label_maps is not None:
            fallback = mix_targets.soft(targets.fallback_target(batch["rows"], batch["labels"]), num_classes)
            batch["target"] = mix_targets.region_targets(targets.label_maps, batch["rows"], batch["boxes"],
                                                         batch["flips"], lam, cut, box, size, fallback,
                                                         batch.get("affine"))
        else:
            batch["target"] = mix_targets.mix_class_target(batch["target"], lam, num_classes)
        if "heat" in batch:
            batch["heat"] = mix_targets.mix_heat(batch["heat"], lam, cut, box, size)
        if "point" in batch:
            batch["point"], batch["point_weight"] = mix_targets.mix_points(batch["point"], batch["point_weight"],
                                                                           lam, cut, box, size)
