"""The device side of mixing (mixing.py): the pixels and every target of a batch, by the per-sample parameters
``lam`` float32 [B], ``cut`` bool [B], ``box`` int64 [B, 4] (yl, yh, xl, xh) pixels of the S×S crop. Sample i is
mixed with its partner B − 1 − i (the batch flipped), as timm's ``Mixup``; a sample that does not mix has
λ = 1 and no box, and every rule below then leaves its targets as they were.

The rules (docs/data-and-training.md, "Mixing"):
  * class targets (hard labels, ``--labels`` posteriors, ReLabel's pooled targets with ``--cutmix-relabel mix``):
    λ·t(a) + (1 − λ)·t(b), hard labels as one-hots (timm's ``mixup_target``; smoothing is left to the loss);
  * ``--cutmix-relabel region`` (CutMix samples with a label map): each image's map pooled over the region it
    shows: b's over the pasted box mapped into b's crop window, a's over its crop minus the box, as the
    area-weighted difference of the two RoIAlign averages of the raw scores, (P(crop) − (1 − λ)·P(box)) / λ;
    then the softmax of each, mixed by λ. Mixup samples pool whole crops, as ``mix``. After a geometric
    augmentation the crop and the box are the bounding boxes of what the image shows, mapped back (the areas
    in the difference are theirs);
  * trace heat maps: CutMix pastes b's map in the box's cells (a cell is in the box when its centre is), a's
    outside, then renormalises to sum 1 (all 0, weight 0, when nothing is left); Mixup: λ·h(a) + (1 − λ)·h(b);
  * click points: CutMix keeps a's click where it lies outside the box, else b's where it lies inside it, else
    none (weight 0): a click under the other image is dropped; Mixup keeps a's click with weight λ·w(a).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def soft(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 [B, C]: class ids as one-hots, distributions as they are."""
    return target.float() if target.is_floating_point() else F.one_hot(target, num_classes).float()


def _box_norm(box: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """(v0, v1, u0, u1) [B] each: the box's rows and columns as fractions of the crop side."""
    return tuple((box.to(torch.float32) / size).unbind(1))


def cells_inside(box: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """bool [B, h, w]: the cells of an h×w grid over the crop whose centre lies in the box (h = w = size: the
    box's own pixels)."""
    v0, v1, u0, u1 = _box_norm(box, size)
    ys = (torch.arange(h, device=box.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=box.device, dtype=torch.float32) + 0.5) / w
    rows = (ys[None] >= v0[:, None]) & (ys[None] < v1[:, None])
    cols = (xs[None] >= u0[:, None]) & (xs[None] < u1[:, None])
    return rows[:, :, None] & cols[:, None, :]


def mix_images(images: torch.Tensor, lam: torch.Tensor, cut: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """[B, 3, S, S]: the partner's pixels in the box (CutMix), λ·a + (1 − λ)·b (Mixup). One ``lerp`` towards the
    partner with a per-pixel weight (1 in a pasted box, 0 around it, 1 − λ for Mixup): weights 0 and 1 give a
    and b exactly, and it is half the passes of a blend and a select (on the CPU, 2x faster)."""
    size = images.shape[-1]
    pasted = cells_inside(box, size, size, size) & cut[:, None, None]
    towards_b = torch.where(pasted, 1.0, torch.where(cut, 0.0, 1 - lam)[:, None, None])
    return torch.lerp(images, images.flip(0), towards_b.to(images.dtype)[:, None])


def mix_class_target(target: torch.Tensor, lam: torch.Tensor, num_classes: int) -> torch.Tensor:
    """float32 [B, C]: λ·t(a) + (1 − λ)·t(b)."""
    t = soft(target, num_classes)
    lam = lam[:, None]
    return lam * t + (1 - lam) * t.flip(0)


def mix_heat(heat: torch.Tensor, lam: torch.Tensor, cut: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """[B, h, w] trace heat maps of the mixed images."""
    pasted = cells_inside(box, size, heat.shape[1], heat.shape[2]) & cut[:, None, None]
    cutmix = torch.where(pasted, heat.flip(0), heat)
    total = cutmix.sum((1, 2), keepdim=True)
    cutmix = torch.where(total > 0, cutmix / torch.where(total > 0, total, torch.ones_like(total)), 0.0)
    lam3 = lam[:, None, None].to(heat.dtype)
    mixup = lam3 * heat + (1 - lam3) * heat.flip(0)
    return torch.where(cut[:, None, None], cutmix, mixup)


def _in_box(point: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    v0, v1, u0, u1 = _box_norm(box, size)
    u, v = point.unbind(1)
    return (u >= u0) & (u < u1) & (v >= v0) & (v < v1)


def mix_points(point: torch.Tensor, weight: torch.Tensor, lam: torch.Tensor, cut: torch.Tensor, box: torch.Tensor,
               size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(point [B, 2], weight [B]) of the mixed images."""
    other, other_w = point.flip(0), weight.flip(0)
    a_seen = cut & (weight > 0) & ~_in_box(point, box, size)
    b_seen = cut & ~a_seen & (other_w > 0) & _in_box(other, box, size)
    cut_point = torch.where(b_seen[:, None], other, point)
    cut_weight = torch.where(a_seen, weight, torch.where(b_seen, other_w, torch.zeros_like(weight)))
    cut_point = torch.where((a_seen | b_seen)[:, None], cut_point, torch.full_like(point, -1.0))
    return torch.where(cut[:, None], cut_point, point), torch.where(cut, cut_weight, lam * weight)


def _inverse(forward: torch.Tensor) -> torch.Tensor:
    """[B, 2, 3] inverse of each affine (closed form: torch.linalg.inv would check for singular matrices with a
    device sync; the augmentation's matrices never are)."""
    a, b, c, d = forward[:, 0, 0], forward[:, 0, 1], forward[:, 1, 0], forward[:, 1, 1]
    det = a * d - b * c
    lin = torch.stack([torch.stack([d, -b], 1), torch.stack([-c, a], 1)], 1) / det[:, None, None]
    return torch.cat([lin, -(lin @ forward[:, :, 2:])], 2)


def box_in_crop(box: torch.Tensor, size: int, crops: torch.Tensor, flips: torch.Tensor,
                affine: Optional[torch.Tensor] = None) -> torch.Tensor:
    """float32 [B, 4] (x0, y0, x1, y1) normalised to the original image: the pasted box (a region of the mixed,
    possibly flipped, crop) where it lies in each crop window. With the batch's geometric augmentation
    (``affine`` [B, 2, 3], crop → output), the box's corners are mapped back first and their bounding box taken,
    as the augmentation pools label maps (augment_targets.pooling_boxes)."""
    v0, v1, u0, u1 = _box_norm(box, size)
    if affine is not None:
        from .augment_targets import apply_affine

        corners = torch.stack([torch.stack([u0, v0], 1), torch.stack([u1, v0], 1), torch.stack([u0, v1], 1),
                               torch.stack([u1, v1], 1)], 1)
        back = apply_affine(corners, _inverse(affine.to(torch.float32))[:, None].expand(-1, 4, 2, 3))
        (u0, v0), (u1, v1) = back.amin(1).clamp(0, 1).unbind(1), back.amax(1).clamp(0, 1).unbind(1)
        u1, v1 = torch.maximum(u1, u0 + 1e-6), torch.maximum(v1, v0 + 1e-6)  # never an empty box
    u0, u1 = torch.where(flips, 1 - u1, u0), torch.where(flips, 1 - u0, u1)  # the crop was mirrored after cutting
    x0, y0, x1, y1 = crops.to(torch.float32).unbind(1)
    out = torch.stack([x0 + u0 * (x1 - x0), y0 + v0 * (y1 - y0), x0 + u1 * (x1 - x0), y0 + v1 * (y1 - y0)], 1)
    return out.clamp(0, 1)


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[:, None]


def region_targets(label_maps, rows: torch.Tensor, crops: torch.Tensor, flips: torch.Tensor, lam: torch.Tensor,
                   cut: torch.Tensor, box: torch.Tensor, size: int, fallback: torch.Tensor,
                   affine: Optional[torch.Tensor] = None) -> torch.Tensor:
    """float32 [B, C], ``--cutmix-relabel region``: each image's label map pooled over the region it shows in
    the mixed image (module doc), λ-mixed; ``fallback`` [B, C] for the images the store lacks; ``affine``: the
    batch's geometric augmentation, if any. One pooling launch of 3B boxes (what each image shows, the box in its
    own crop, the box in its partner's crop), raw scores; the areas weighing the difference are those boxes'."""
    from ..ops import label_pool
    from ..ops.label_pool import softmax_classes

    lrow = label_maps.rows[rows]
    known = lrow >= 0
    lrow = lrow.clamp(min=0)
    crops = crops.to(torch.float32)
    whole = crops if affine is None else box_in_crop(  # the crop window, or what the augmented image shows of it
        torch.tensor([[0, size, 0, size]], device=box.device).expand(len(box), 4), size, crops, flips, affine)
    # a sample that does not CutMix pools its own and its partner's whole regions instead (valid, never used)
    own = torch.where(cut[:, None], box_in_crop(box, size, crops, flips, affine), whole)
    other = torch.where(cut[:, None], box_in_crop(box, size, crops.flip(0), flips.flip(0),
                                                  None if affine is None else affine.flip(0)), whole.flip(0))
    scores, indices = label_maps.tensors
    raw = label_pool(scores, indices, torch.cat([whole, own, other]), label_maps.num_classes,
                     box_order=label_maps.box_order, rows=torch.cat([lrow, lrow, lrow.flip(0)]), validate=False)
    p_whole, p_own, p_other = raw.split(rows.shape[0])
    rest = _area(whole) - _area(own)  # a's crop minus the box (without augmentation: λ of the crop's area)
    shown = cut[:, None] & (rest > 0)  # 0: the box covers all of a (its term has weight λ = 0)
    a_raw = torch.where(shown, (_area(whole) * p_whole - _area(own) * p_own) / rest.clamp(min=1e-12), p_whole)
    b_raw = torch.where(cut[:, None], p_other, p_whole.flip(0))
    t_a = torch.where(known[:, None], softmax_classes(a_raw), fallback)
    t_b = torch.where(known.flip(0)[:, None], softmax_classes(b_raw), fallback.flip(0))
    lam2 = lam[:, None]
    return lam2 * t_a + (1 - lam2) * t_b
