"""Per-crop targets from a packed store, vectorised over a batch in torch (CPU or GPU).

Conventions (docs/architecture.md of the house plan): crop boxes float32 [B, 4] = (x0, y0, x1, y1)
normalised to the original image; flips bool [B] mirror the crop horizontally after cropping; a point
(x, y) in the crop is ((x − x0)/(x1 − x0), (y − y0)/(y1 − y0)), then x ↦ 1 − x when flipped.
"""

from __future__ import annotations

import numpy as np
import torch


def check_batch(rows: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, n: int, values: bool = True) -> None:
    """Names the argument, what was expected and what came. ``values=False`` checks shapes and dtypes only:
    the value checks read the tensors back, which on a GPU waits for every queued kernel."""
    if rows.ndim != 1 or rows.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"rows must be an int64 [B] tensor, got {rows.dtype} {tuple(rows.shape)}")
    b = rows.shape[0]
    if boxes.shape != (b, 4) or not boxes.is_floating_point():
        raise ValueError(f"boxes must be a float [B, 4] tensor with B={b}, got {boxes.dtype} {tuple(boxes.shape)}")
    if flips.shape != (b,) or flips.dtype != torch.bool:
        raise ValueError(f"flips must be a bool [B] tensor with B={b}, got {flips.dtype} {tuple(flips.shape)}")
    if not values:
        return
    if not b:
        return
    x0, y0, x1, y1 = boxes.unbind(1)
    # as the ops that take the same crops (label_pool, rasterize): inside the image; a NaN fails every comparison
    good_boxes = (x0 >= 0) & (y0 >= 0) & (x1 <= 1) & (y1 <= 1) & (x0 < x1) & (y0 < y1)
    ok = torch.stack([rows.min() >= 0, rows.max() < n, good_boxes.all()])
    if bool(ok.all()):  # the one device sync of the checks; the messages below are the failure path only
        return
    if not (bool(ok[0]) and bool(ok[1])):
        raise ValueError(f"rows must be in [0, {n}), got values in [{int(rows.min())}, {int(rows.max())}]")
    bad = int(torch.nonzero(~good_boxes)[0, 0])
    raise ValueError(f"boxes must be finite (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1; crop {bad} "
                     f"is {[round(float(v), 6) for v in boxes[bad]]}")


def to_crop(xy: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Points [B, 2] in image coordinates → crop-normalised coordinates, flipped where asked."""
    x0, y0, x1, y1 = boxes.to(torch.float32).unbind(1)
    u = (xy[:, 0] - x0) / (x1 - x0)
    v = (xy[:, 1] - y0) / (y1 - y0)
    u = torch.where(flips, 1.0 - u, u)
    return torch.stack([u, v], 1)


def selected_clicks(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(click_xy [Q, 2] float32, offsets [N + 1] int64): each sample's clicks from its selecting records."""
    rec_off = np.asarray(arrays["rec_offsets"], np.int64)
    click_off = np.asarray(arrays["click_offsets"], np.int64)
    per_rec = np.diff(click_off)
    keep_rec = np.asarray(arrays["rec_selected"], bool)
    keep = np.repeat(keep_rec, per_rec)  # one flag per click, from its record
    xy = np.asarray(arrays["click_xy"], np.float32).reshape(-1, 2)[keep]
    kept = np.zeros(len(per_rec) + 1, np.int64)  # kept clicks before each record
    np.cumsum(np.where(keep_rec, per_rec, 0), out=kept[1:])
    return np.ascontiguousarray(xy), kept[rec_off]


class ByproductTensors:
    """The arrays a training step needs, as torch tensors on one device."""

    def __init__(self, arrays: dict[str, np.ndarray], device: torch.device | str) -> None:
        self.device = torch.device(device)
        t = lambda a: torch.from_numpy(np.array(a)).to(self.device)  # noqa: E731 (copy out of the mmap)
        self.n = len(arrays["rec_offsets"]) - 1
        self.click_point = t(arrays["click_point"])  # [N, 2] float32, NaN = no click
        rec_off = np.asarray(arrays["rec_offsets"])
        self.trace_offsets = t(np.asarray(arrays["trace_offsets"])[rec_off])  # [N + 1]: per-sample trace ranges
        self.trace_xy = t(arrays["trace_xy"])
        self.trace_t = t(arrays["trace_t"])
        self.click_xy, self.click_offsets = (t(a) for a in selected_clicks(arrays))

    def raster_inputs(self) -> dict[str, object]:
        """The whole store's ragged arrays as ``rasterize_traces`` takes them (the kernels gather by row):
        ``dict(points=[P, 2], times=[P], offsets=[N + 1], clicks=(click_points [Q, 2], click_offsets [N + 1]))``;
        the clicks are those of the records that selected the image (as for the click point)."""
        return {"points": self.trace_xy, "times": self.trace_t, "offsets": self.trace_offsets,
                "clicks": (self.click_xy, self.click_offsets)}

    def point_targets(self, rows: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor,
                      validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(points [B, 2] float32, weights [B] float32), as the official ImageNet loader: the click point
        (mean over selected records of their first click) in crop coordinates; weight 1 if it lies in the
        crop (0 ≤ u, v ≤ 1), else weight 0 and point (−1, −1); weight 0 when there is no click.
        ``validate=False`` skips the value checks (rows in range, x0 < x1, y0 < y1; a device sync) for callers
        whose rows and boxes are right by construction, as the loader's."""
        rows, boxes, flips = (x.to(self.device) for x in (rows, boxes, flips))
        check_batch(rows, boxes, flips, self.n, values=validate)
        click = self.click_point[rows.long()]
        p = to_crop(click, boxes, flips)
        inside = torch.isfinite(click).all(1) & (p >= 0).all(1) & (p <= 1).all(1)
        points = torch.where(inside[:, None], p, torch.full_like(p, -1.0))
        return points, inside.to(torch.float32)

    def traces_for(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's traces packed for rasterisation: (points [P, 2] float32 in image coordinates,
        times [P] int64, offsets [B + 1] int64); sample b owns points[offsets[b]:offsets[b + 1]], its
        workers' traces one after another in record order."""
        if rows.ndim != 1 or rows.dtype not in (torch.int64, torch.int32):  # a float row would be truncated
            raise ValueError(f"rows must be an int64 [B] tensor, got {rows.dtype} {tuple(rows.shape)}")
        rows = rows.to(self.device).long()
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.n):
            raise ValueError(f"rows must be in [0, {self.n}), got [{int(rows.min())}, {int(rows.max())}]")
        start, end = self.trace_offsets[rows], self.trace_offsets[rows + 1]
        counts = end - start
        offsets = torch.zeros(rows.numel() + 1, dtype=torch.int64, device=self.device)
        torch.cumsum(counts, 0, out=offsets[1:])
        total = int(offsets[-1])
        idx = torch.repeat_interleave(start - offsets[:-1], counts, output_size=total)
        idx += torch.arange(total, device=self.device)
        return self.trace_xy[idx], self.trace_t[idx], offsets
