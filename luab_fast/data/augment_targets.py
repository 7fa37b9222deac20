"""The geometric augmentation carried to the targets: click points, trace heat maps and label-map boxes.

``forward`` [B, 2, 3] maps a crop-normalised point (after the flip) to where the augmented image shows it
(augment.py). The trace kernels take crop boxes and flips, not affines, so a batch's traces are gathered once
(index built on the host from the store's offsets: no device sync), taken to their augmented crop coordinates
here, and rasterised with the unit box and no flip: the same kernels, and every backend sees the same points.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..byproducts.targets import to_crop


def apply_affine(p: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """[..., 2] points (each row's own [2, 3] ``forward``, batched alike) → their images."""
    return torch.einsum("...ij,...j->...i", forward[..., :2], p) + forward[..., 2]


def move_points(point: torch.Tensor, weight: torch.Tensor, forward: torch.Tensor) -> tuple[torch.Tensor,
                                                                                            torch.Tensor]:
    """The click targets after the affine: a click moved out of the image gets weight 0 and point (−1, −1)."""
    moved = apply_affine(point, forward)
    inside = (weight > 0) & (moved >= 0).all(1) & (moved <= 1).all(1)
    return torch.where(inside[:, None], moved, torch.full_like(moved, -1.0)), inside.to(weight.dtype)


def _gather_index(store_rows: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index [P'] into the store's ragged array, new offsets [B + 1], owner [P'] batch sample) for the rows;
    a row < 0 (not in the store) owns nothing."""
    start = np.where(store_rows >= 0, offsets[np.maximum(store_rows, 0)], 0)
    counts = np.where(store_rows >= 0, offsets[np.maximum(store_rows, 0) + 1] - start, 0)
    new = np.zeros(len(store_rows) + 1, np.int64)
    np.cumsum(counts, out=new[1:])
    owner = np.repeat(np.arange(len(store_rows)), counts)
    index = np.arange(new[-1], dtype=np.int64) - new[:-1][owner] + start[owner]
    return index, new, owner


def moved_raster_inputs(raster: dict, host_offsets: np.ndarray, host_click_offsets: np.ndarray,
                        store_rows: np.ndarray, boxes: torch.Tensor, flips: torch.Tensor, forward: torch.Tensor,
                        to_device: Callable[[np.ndarray], torch.Tensor]) -> dict:
    """``rasterize_traces`` keyword arguments for the batch's traces and clicks in augmented crop coordinates
    (``rows`` = the batch order, unit boxes, no flips)."""
    B = len(store_rows)
    index, offsets, owner = _gather_index(store_rows, host_offsets)
    cindex, coffsets, cowner = _gather_index(store_rows, host_click_offsets)
    idx, own, cidx, cown = (to_device(a) for a in (index, owner, cindex, cowner))

    def moved(xy: torch.Tensor, who: torch.Tensor) -> torch.Tensor:
        return apply_affine(to_crop(xy, boxes[who], flips[who]), forward[who])

    click_xy, _ = raster["clicks"]
    dev = boxes.device
    return dict(points=moved(raster["points"][idx], own), times=raster["times"][idx], offsets=to_device(offsets),
                clicks=(moved(click_xy[cidx], cown), to_device(coffsets)),
                rows=torch.arange(B, device=dev), boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=dev).expand(B, 4),
                flips=torch.zeros(B, dtype=torch.bool, device=dev))


def pooling_boxes(boxes: torch.Tensor, flips: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """float32 [B, 4] image-normalised (x0, y0, x1, y1): the part of the crop the augmented image shows, as the
    bounding box of its output square mapped back into the crop (``inverse`` [B, 2, 3], output → crop), clipped
    to the crop. A translation gives the shifted crop exactly; a rotation or shear its axis-aligned bounds."""
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], device=boxes.device)
    back = apply_affine(corners[None].expand(len(boxes), 4, 2), inverse[:, None].expand(-1, 4, 2, 3))
    lo, hi = back.amin(1).clamp(0, 1), back.amax(1).clamp(0, 1)
    hi = torch.maximum(hi, lo + 1e-6)  # the output always shows some of the crop; never an empty box
    u0 = torch.where(flips, 1 - hi[:, 0], lo[:, 0])  # undo the flip: the store's boxes are unflipped
    u1 = torch.where(flips, 1 - lo[:, 0], hi[:, 0])
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack([x0 + u0 * (x1 - x0), y0 + lo[:, 1] * (y1 - y0), x0 + u1 * (x1 - x0),
                        y0 + hi[:, 1] * (y1 - y0)], 1)
