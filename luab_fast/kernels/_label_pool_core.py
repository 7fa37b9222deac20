"""RoIAlign bins of sparse top-k label maps, accumulated in fixed point: the device functions the
label_pool kernel (kernels/label_pool.py) and the relabel_cross_entropy kernel share, and their launch options.

Why it is accurate and deterministic although it scatters:
  * RoIAlign's sample grid is a tensor product and its bilinear weights are products of a row weight and a
    column weight, so the total weight of map cell (r, q) is Wy[r] · Wx[q] (sums over the bin's sample rows
    and columns; a sample outside [−1, S] zeroes its row or column). The sample positions and per-sample
    weights are computed with torchvision's float32 expressions (../shared/docs/label-pooling.md §7), the sums in
    float64.
  * Each of the K·S·S sparse entries then adds w·v to its class. Those adds go into an int64 fixed-point
    accumulator (scale 2**40, FIX_SCALE) with integer atomics: integer addition is associative, so the result
    does not depend on the order the atomics land in (bitwise reproducible run to run), and it carries at most
    2**-40 (~1e-12) of rounding per entry before the one final rounding to float32.
  The price is a range limit: |scores| < 2**22 (MAX_ABS_SCORE), checked by the ops' validation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .limits import FIX_SCALE, MAX_ABS_SCORE  # noqa: F401 - the accumulators' scale and the scores' range


@triton.jit
def axis_weight(coord, lo, hi, S, p, n_bins, CELLS: tl.constexpr):
    """f64[CELLS] total weight of each map line ``coord`` along one axis for output bin ``p`` of ``n_bins``,
    and the bin's sample count along it. ``lo, hi``: the box edges (normalised f32) on this axis."""
    s_f = S * 1.0
    start = lo * s_f - 0.5  # fl(fl(e·S) − 0.5): ReLabel's roi row; spatial_scale = 1, aligned = False
    end = hi * s_f - 0.5
    size = tl.maximum(end - start, 1.0)
    bin_size = size / (n_bins * 1.0)
    grid = tl.ceil(bin_size).to(tl.int32)  # sampling_ratio = -1: ceil(roi_size / pooled_size)
    grid_f = grid * 1.0
    base = start + (p * 1.0) * bin_size
    w = tl.zeros([CELLS], dtype=tl.float64)
    for i in range(0, grid):
        y = base + ((i + 0.5) * bin_size) / grid_f  # torchvision's float32 expression tree
        valid = (y >= -1.0) & (y <= s_f)
        y = tl.where(y <= 0.0, 0.0, y)
        y0 = y.to(tl.int32)
        top = y0 >= S - 1
        y1 = tl.where(top, S - 1, y0 + 1)
        y0 = tl.where(top, S - 1, y0)
        y = tl.where(top, (S - 1) * 1.0, y)
        ly = y - y0 * 1.0
        hy = 1.0 - ly
        w += tl.where(coord == y0, tl.where(valid, hy, 0.0).to(tl.float64), 0.0)
        w += tl.where(coord == y1, tl.where(valid, ly, 0.0).to(tl.float64), 0.0)
    return w, grid


@triton.jit
def accumulate(acc_row, scores_ptr, indices_ptr, rows_ptr, boxes_ptr, b, ph, pw,
                N, C, K, S, out_h, out_w,
                HAS_ROWS: tl.constexpr, LEGACY: tl.constexpr, CELLS: tl.constexpr, BLOCK_C: tl.constexpr):
    """Zeroes ``acc_row`` (i64[C]) and adds every sparse entry of sample ``b``'s map that bin (ph, pw) of
    its box touches, as fixed point. Ends with a barrier: the row is complete when it returns."""
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        tl.store(acc_row + cols, tl.zeros([BLOCK_C], dtype=tl.int64), mask=cols < C)
    tl.debug_barrier()

    if HAS_ROWS:
        src = tl.load(rows_ptr + b).to(tl.int64)
    else:
        src = b.to(tl.int64)
    row_ok = (src >= 0) & (src < N)  # validate=False must still never read outside the store
    bx0 = tl.load(boxes_ptr + b * 4 + 0)
    by0 = tl.load(boxes_ptr + b * 4 + 1)
    bx1 = tl.load(boxes_ptr + b * 4 + 2)
    by1 = tl.load(boxes_ptr + b * 4 + 3)
    if LEGACY:  # the official code hands roi_align (y0, x0, y1, x1): its x axis runs along the map's rows
        col_lo, col_hi, row_lo, row_hi = by0, by1, bx0, bx1
    else:
        col_lo, col_hi, row_lo, row_hi = bx0, bx1, by0, by1

    n_cells = S * S
    for cell0 in range(0, n_cells, CELLS):
        cell = cell0 + tl.arange(0, CELLS)
        wy, gh = axis_weight(cell // S, row_lo, row_hi, S, ph, out_h, CELLS)
        wx, gw = axis_weight(cell % S, col_lo, col_hi, S, pw, out_w, CELLS)
        w = wy * wx / (tl.maximum(gh * gw, 1) * 1.0)
        live = (cell < n_cells) & (w != 0.0) & row_ok
        for k in range(0, K):
            off = (src * K + k) * n_cells + cell  # int64: a 1.28M-image store holds 1.4e9 entries
            v = tl.load(scores_ptr + off, mask=live, other=0.0).to(tl.float64)
            c = tl.load(indices_ptr + off, mask=live, other=-1).to(tl.int32)
            fixed = (w * v * 1099511627776.0).to(tl.int64)  # · FIX_SCALE (2**40: exact in float64)
            tl.atomic_add(acc_row + c, fixed, mask=live & (c >= 0) & (c < C))
    tl.debug_barrier()


@triton.jit
def pooled(acc_row, cols, C):
    """f32 pooled scores of classes ``cols`` from the fixed-point row (0 outside [0, C))."""
    fixed = tl.load(acc_row + cols, mask=cols < C, other=0)
    return (fixed.to(tl.float64) * (1.0 / 1099511627776.0)).to(tl.float32)


def launch_config(S: int, C: int) -> dict:
    """Block sizes: all S·S cells of a map in one vector (≤ 1024), classes in blocks of ≤ 1024."""
    return dict(CELLS=min(triton.next_power_of_2(S * S), 1024), BLOCK_C=min(triton.next_power_of_2(C), 1024))


def fp_options(device: torch.device) -> dict:
    """The compile options both kernels launch with: no a·b+c contraction on the GPU, so that the sample
    positions keep torchvision's CPU float32 rounding."""
    return {"enable_fp_fusion": False} if device.type == "cuda" else {}
