"""Triton fused ReLabel soft-target cross-entropy: LabelPooling + softmax target + cross-entropy + its
gradient, one launch per batch, the target never written to memory.

Per sample b (../shared/docs/label-pooling.md §6): p = the pooled scores (the label_pool kernel's fixed-point
accumulation, kernels/_label_pool_core.py), t = softmax_c(p) over all C (absent classes at 0), and

    loss_b = logsumexp(x_b) − Σ_c t_bc x_bc,        ∂loss_b/∂x_bc = softmax(x_b)_c − t_bc.

One pass over the classes keeps three online (max-rescaled) sums: Σ e^(x−mx), Σ e^(p−mp) and
Σ e^(p−mp)·x, so Σ t x = (Σ e^(p−mp)·x) / Σ e^(p−mp) without t. When the gradient is wanted a second pass
writes softmax(x) − t (Liger-Kernel's habit: the backward is then one multiply by the incoming gradient).
Arithmetic is float32, or float64 for float64 logits (gradcheck).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._label_pool_core import accumulate, fp_options, launch_config, pooled


@triton.jit
def _relabel_ce_kernel(logits_ptr,   # [B, C] f16/bf16/f32/f64, contiguous
                       scores_ptr,   # [N, K, S, S] or [B, K, S, S]
                       indices_ptr,  # same shape, integer or float holding integers
                       rows_ptr,     # [B] int64 (HAS_ROWS)
                       boxes_ptr,    # [B, 4] f32
                       loss_ptr,     # [B] f32 (f64 for f64 logits): per-sample loss
                       grad_ptr,     # [B, C] logits' dtype: softmax(x) − t (COMPUTE_GRAD)
                       acc_ptr,      # [B, C] i64 scratch
                       N, C, K, S,
                       HAS_ROWS: tl.constexpr, LEGACY: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
                       DTYPE: tl.constexpr, CELLS: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0)
    acc_row = acc_ptr + b.to(tl.int64) * C
    accumulate(acc_row, scores_ptr, indices_ptr, rows_ptr, boxes_ptr, b, 0, 0, N, C, K, S, 1, 1,
               HAS_ROWS, LEGACY, CELLS, BLOCK_C)

    x_row = logits_ptr + b.to(tl.int64) * C
    neg_inf = tl.full([], float("-inf"), DTYPE)
    zero = tl.zeros([], DTYPE)
    mx, zx, mp, zp, u = neg_inf, zero, neg_inf, zero, zero
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = cols < C
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(DTYPE)
        x_or_ninf = tl.where(mask, x, float("-inf"))  # the masked tail takes no softmax mass
        p = tl.where(mask, pooled(acc_row, cols, C).to(DTYPE), float("-inf"))
        mx_new = tl.maximum(mx, tl.max(x_or_ninf, axis=0))
        zx = zx * tl.exp(mx - mx_new) + tl.sum(tl.exp(x_or_ninf - mx_new), axis=0)
        mx = mx_new
        mp_new = tl.maximum(mp, tl.max(p, axis=0))
        ep = tl.exp(p - mp_new)  # 0 on the masked tail, where x is 0: the product stays finite
        rescale = tl.exp(mp - mp_new)
        zp = zp * rescale + tl.sum(ep, axis=0)
        u = u * rescale + tl.sum(ep * x, axis=0)
        mp = mp_new
    lse = mx + tl.log(zx)
    tl.store(loss_ptr + b, lse - u / zp)

    if COMPUTE_GRAD:
        g_row = grad_ptr + b.to(tl.int64) * C
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask = cols < C
            x = tl.load(x_row + cols, mask=mask, other=0.0).to(DTYPE)
            p = pooled(acc_row, cols, C).to(DTYPE)
            g = tl.exp(x - lse) - tl.exp(p - mp) / zp
            tl.store(g_row + cols, g.to(grad_ptr.dtype.element_ty), mask=mask)


def relabel_ce_triton(logits: torch.Tensor, scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor,
                      rows: torch.Tensor | None, legacy: bool, compute_grad: bool
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample loss f32[B] (f64 for f64 logits), gradient [B, C] in the logits' dtype, or an empty
    tensor when not ``compute_grad``). Inputs contiguous and already validated."""
    B, C = logits.shape
    N, K, S, _ = scores.shape
    wide = logits.dtype == torch.float64
    loss = torch.empty(B, dtype=torch.float64 if wide else torch.float32, device=logits.device)
    grad = torch.empty((B, C) if compute_grad else (0,), dtype=logits.dtype, device=logits.device)
    if B == 0:
        return loss, grad
    acc = torch.empty((B, C), dtype=torch.int64, device=logits.device)
    _relabel_ce_kernel[(B,)](
        logits, scores, indices, rows if rows is not None else boxes, boxes, loss, grad if compute_grad else loss,
        acc, N, C, K, S,
        HAS_ROWS=rows is not None, LEGACY=legacy, COMPUTE_GRAD=compute_grad,
        DTYPE=tl.float64 if wide else tl.float32, **launch_config(S, C), **fp_options(logits.device))
    return loss, grad
