"""Triton trace rasterisation (LUAB byproducts, Han et al., "Neglected Free Lunch", ICCV 2023): one launch
for the batch, one program per crop.

Each program gathers its sample's points by row from the (GPU-resident) store, maps them into the crop
(then flips), and splats normalised Gaussians truncated to their 4σ footprint (luab_fast/ops/rasterize.py).
The splat is separable, so a block of points is a matrix
product: heat[H, W] += (w ⊙ Gy)ᵀ[H, P] · Gx[P, W], with Gy[p, i] = exp(−(i + ½ − py_p)² / 2σ²) and Gx
likewise — ``tl.dot`` in IEEE float32 (not TF32: the maps must match the reference to 1e-5). Output maps
larger than one tile (64 × 64) are done tile by tile; "sum"/"max" normalisation re-reads the program's
own finished tiles after a barrier.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

TILE_MAX = 64  # output tile side; a 64 × 64 float32 accumulator is 32 registers a thread at 4 warps


@triton.jit
def _splat_tile(acc, xy_ptr, t_ptr, start, end, box_x0, box_y0, box_x1, box_y1, flip, i0, j0, H, W,
                two_s2, inv_two_s2, mass, dwell_cap_ms, DWELL: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                BLOCK_P: tl.constexpr):
    """acc[TILE_H, TILE_W] (rows i0.., cols j0..) += the Gaussians of points [start, end) of one sample."""
    ii = i0 + tl.arange(0, TILE_H)
    jj = j0 + tl.arange(0, TILE_W)
    cy = ii.to(tl.float32) + 0.5
    cx = jj.to(tl.float32) + 0.5
    norm = 1.0 / (3.141592653589793 * two_s2)  # 1 / (2 pi sigma^2)
    for p0 in range(start, end, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        live = p < end
        x = tl.load(xy_ptr + 2 * p, mask=live, other=0.0)
        y = tl.load(xy_ptr + 2 * p + 1, mask=live, other=0.0)
        # the project's crop convention, in the same float32 operations as the reference and the C++ kernel
        u = (x - box_x0) / (box_x1 - box_x0)
        v = (y - box_y0) / (box_y1 - box_y0)
        u = tl.where(flip, 1.0 - u, u)
        px = u * W
        py = v * H
        if DWELL:  # time until the next point of the sample, capped; the last point (or a jump back) gets the cap
            t = tl.load(t_ptr + p, mask=live, other=0)
            t_next = tl.load(t_ptr + p + 1, mask=(p + 1) < end, other=0)
            dt = (t_next - t).to(tl.float32)
            has_next = ((p + 1) < end) & (dt >= 0.0)
            w = tl.where(has_next, tl.minimum(dt, dwell_cap_ms), dwell_cap_ms) / 1000.0
        else:
            w = tl.zeros([BLOCK_P], dtype=tl.float32) + mass
        w = tl.where(live, w * norm, 0.0)
        dy = cy[None, :] - py[:, None]
        dx = cx[None, :] - px[:, None]
        ay = dy * dy * inv_two_s2  # the footprint predicate's float32 operations, as in every backend
        ax = dx * dx * inv_two_s2
        gy = tl.where(ay <= 8.0, tl.exp(-ay), 0.0) * w[:, None]  # [BLOCK_P, TILE_H]
        gx = tl.where(ax <= 8.0, tl.exp(-ax), 0.0)               # [BLOCK_P, TILE_W]
        acc += tl.dot(tl.trans(gy), gx, input_precision="ieee")
    return acc


@triton.jit
def _rasterize_kernel(xy_ptr,        # [P, 2] f32 trace points, image-normalised
                      t_ptr,         # [P] i64 ms (DWELL)
                      off_ptr,       # [N + 1] i64
                      cxy_ptr,       # [Q, 2] f32 clicks (HAS_CLICKS)
                      coff_ptr,      # [N + 1] i64 (HAS_CLICKS)
                      rows_ptr,      # [B] i64
                      boxes_ptr,     # [B, 4] f32 (x0, y0, x1, y1)
                      flips_ptr,     # [B] u8
                      out_ptr,       # [B, H, W] f32
                      N, P, Q, H, W, two_s2, inv_two_s2, click_mass, dwell_cap_ms,
                      DWELL: tl.constexpr, HAS_CLICKS: tl.constexpr, NORMALIZE: tl.constexpr,
                      TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_P: tl.constexpr):
    b = tl.program_id(0)
    row = tl.load(rows_ptr + b)
    row_ok = (row >= 0) & (row < N)  # validate=False must still never read outside the store
    row = tl.where(row_ok, row, 0)
    start = tl.load(off_ptr + row)
    end = tl.load(off_ptr + row + 1)
    start = tl.minimum(tl.maximum(start, 0), P)
    end = tl.where(row_ok, tl.minimum(tl.maximum(end, start), P), start)
    if HAS_CLICKS:
        c_start = tl.minimum(tl.maximum(tl.load(coff_ptr + row), 0), Q)
        c_end = tl.where(row_ok, tl.minimum(tl.maximum(tl.load(coff_ptr + row + 1), c_start), Q), c_start)
    x0 = tl.load(boxes_ptr + 4 * b)
    y0 = tl.load(boxes_ptr + 4 * b + 1)
    x1 = tl.load(boxes_ptr + 4 * b + 2)
    y1 = tl.load(boxes_ptr + 4 * b + 3)
    flip = tl.load(flips_ptr + b) != 0
    out_b = out_ptr + b.to(tl.int64) * H * W

    total = 0.0
    peak = 0.0
    for i0 in range(0, H, TILE_H):
        for j0 in range(0, W, TILE_W):
            acc = tl.zeros([TILE_H, TILE_W], dtype=tl.float32)
            acc = _splat_tile(acc, xy_ptr, t_ptr, start, end, x0, y0, x1, y1, flip, i0, j0, H, W, two_s2,
                              inv_two_s2, 1.0, dwell_cap_ms, DWELL, TILE_H, TILE_W, BLOCK_P)
            if HAS_CLICKS:
                acc = _splat_tile(acc, cxy_ptr, t_ptr, c_start, c_end, x0, y0, x1, y1, flip, i0, j0, H, W, two_s2,
                                  inv_two_s2, click_mass, dwell_cap_ms, False, TILE_H, TILE_W, BLOCK_P)
            ii = i0 + tl.arange(0, TILE_H)
            jj = j0 + tl.arange(0, TILE_W)
            inside = (ii[:, None] < H) & (jj[None, :] < W)
            acc = tl.where(inside, acc, 0.0)
            total += tl.sum(tl.sum(acc, axis=1), axis=0)
            peak = tl.maximum(peak, tl.max(tl.max(acc, axis=1), axis=0))
            tl.store(out_b + ii[:, None] * W + jj[None, :], acc, mask=inside)

    if NORMALIZE != 0:  # 1: sum, 2: max; an all-zero map stays zero
        denom = total if NORMALIZE == 1 else peak
        scale = 1.0 / tl.where(denom > 0.0, denom, 1.0)
        tl.debug_barrier()  # the tiles above were written by other threads of this program
        for i0 in range(0, H, TILE_H):
            for j0 in range(0, W, TILE_W):
                ii = i0 + tl.arange(0, TILE_H)
                jj = j0 + tl.arange(0, TILE_W)
                inside = (ii[:, None] < H) & (jj[None, :] < W)
                ptr = out_b + ii[:, None] * W + jj[None, :]
                tl.store(ptr, tl.load(ptr, mask=inside, other=0.0) * scale, mask=inside)


def gaussian_constants(sigma: float) -> tuple[float, float]:
    """(2σ², 1/(2σ²)) rounded to float32 as the C++ kernel computes them: every backend then takes the same
    footprint decisions."""
    two_s2 = np.float32(2.0) * np.float32(sigma) * np.float32(sigma)
    return float(two_s2), float(np.float32(1.0) / two_s2)


def launch_config(h: int, w: int) -> dict:
    """Tiles cover the map when it is at most 64 × 64 (tl.dot needs every side >= 16)."""
    return dict(TILE_H=max(16, min(triton.next_power_of_2(h), TILE_MAX)),
                TILE_W=max(16, min(triton.next_power_of_2(w), TILE_MAX)), BLOCK_P=32)


def rasterize_triton(points: torch.Tensor, times: torch.Tensor, offsets: torch.Tensor, rows: torch.Tensor,
                     boxes: torch.Tensor, flips: torch.Tensor, click_points: torch.Tensor | None,
                     click_offsets: torch.Tensor | None, h: int, w: int, sigma: float, dwell: bool,
                     dwell_cap_ms: float, click_mass: float, normalize: int) -> torch.Tensor:
    """f32[B, h, w]; inputs contiguous with the kernel's dtypes (f32 points/boxes, i64 times/offsets/rows,
    u8 flips) and already validated."""
    B = rows.shape[0]
    out = torch.empty((B, h, w), dtype=torch.float32, device=rows.device)
    if B == 0:
        return out
    has_clicks = click_points is not None
    _rasterize_kernel[(B,)](
        points, times, offsets, click_points if has_clicks else points, click_offsets if has_clicks else offsets,
        rows, boxes, flips, out, offsets.shape[0] - 1, points.shape[0],
        click_points.shape[0] if has_clicks else 0, h, w, *gaussian_constants(sigma), click_mass, dwell_cap_ms,
        DWELL=dwell, HAS_CLICKS=has_clicks, NORMALIZE=normalize, **launch_config(h, w))
    return out

