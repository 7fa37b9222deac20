"""Triton LabelPooling (ReLabel, Yun et al., CVPR 2021, arXiv 2101.05022): one launch per batch.

One program per (sample, output bin). It gathers its sample's top-k map by row straight from the
(GPU-resident) store, pools it sparsely (``accumulate``: exact fixed-point class sums, why it is accurate and
deterministic although it scatters is in kernels/_label_pool_core.py) and writes the pooled scores, or their
softmax over C (ReLabel's targets). Nothing [B, C, S, S] is ever built.

torchvision's float32 roi_align rounds at every one of its (up to 900) adds; against it the pooled scores
agree to a few float32 ulps (~1e-7 of the scores' scale), and against an exact evaluation of its formula
they are closer than torchvision itself (tests/test_label_pool_triton.py). The CPU backend is the
bit-identical one.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._label_pool_core import accumulate, fp_options, launch_config, pooled


@triton.jit
def _label_pool_kernel(scores_ptr,   # [N, K, S, S] f32/f16/bf16 (the store) or [B, K, S, S]
                       indices_ptr,  # [N, K, S, S] int16/32/64 or float holding integers
                       rows_ptr,     # [B] int64 rows into scores/indices (HAS_ROWS)
                       boxes_ptr,    # [B, 4] f32 (x0, y0, x1, y1) normalised
                       out_ptr,      # [B, C, out_h, out_w] f32
                       acc_ptr,      # [B * out_h * out_w, C] i64 scratch
                       N, C, K, S, out_h, out_w,
                       HAS_ROWS: tl.constexpr, LEGACY: tl.constexpr, SOFTMAX: tl.constexpr,
                       CELLS: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    bins = out_h * out_w
    b = pid // bins
    bin_id = pid % bins
    acc_row = acc_ptr + pid.to(tl.int64) * C
    accumulate(acc_row, scores_ptr, indices_ptr, rows_ptr, boxes_ptr, b, bin_id // out_w, bin_id % out_w,
               N, C, K, S, out_h, out_w, HAS_ROWS, LEGACY, CELLS, BLOCK_C)

    out_row = out_ptr + b.to(tl.int64) * C * bins + bin_id  # class stride: bins
    if SOFTMAX:  # over all C, absent classes entering as 0 (ReLabel): online max and sum, then normalise
        m = float("-inf")
        z = 0.0
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            p = tl.where(cols < C, pooled(acc_row, cols, C), float("-inf"))
            m_new = tl.maximum(m, tl.max(p, axis=0))
            z = z * tl.exp(m - m_new) + tl.sum(tl.exp(p - m_new), axis=0)
            m = m_new
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            p = pooled(acc_row, cols, C)
            tl.store(out_row + cols * bins, tl.exp(p - m) / z, mask=cols < C)
    else:
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            tl.store(out_row + cols * bins, pooled(acc_row, cols, C), mask=cols < C)


def label_pool_triton(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, rows: torch.Tensor | None,
                      num_classes: int, out_h: int, out_w: int, legacy: bool, softmax: bool) -> torch.Tensor:
    """f32[B, C, out_h, out_w]. ``scores``/``indices``: contiguous [N, K, S, S] (gathered by ``rows`` [B]
    int64) or [B, K, S, S] (``rows`` None); ``boxes``: contiguous f32 [B, 4]; values already validated."""
    B = boxes.shape[0]
    N, K, S, _ = scores.shape
    out = torch.empty((B, num_classes, out_h, out_w), dtype=torch.float32, device=boxes.device)
    if B == 0:
        return out
    acc = torch.empty((B * out_h * out_w, num_classes), dtype=torch.int64, device=boxes.device)
    _label_pool_kernel[(B * out_h * out_w,)](
        scores, indices, rows if rows is not None else boxes, boxes, out, acc,
        N, num_classes, K, S, out_h, out_w,
        HAS_ROWS=rows is not None, LEGACY=legacy, SOFTMAX=softmax, **launch_config(S, num_classes),
        **fp_options(boxes.device))
    return out
