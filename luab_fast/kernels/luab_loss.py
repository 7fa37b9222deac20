"""Triton fused LUAB loss: per-sample cross-entropy, point smooth-L1 and heat-map KL with their gradients,
one launch per batch, one program per sample b.

Per sample b (luab_fast/ops/luab_loss.py gives the formulas):

    cls_b  = Σt'·lse(x_b) − Σ_c t'_c x_bc,              ∂/∂x_bc = softmax(x_b)_c·Σt' − t'_c
    point_b = mean_k smoothL1_β=1(d_bk),  d = pred − target,  ∂/∂pred_bk = clamp(d_bk, −1, 1) / 2
    heat_b = Σ q log q − Σ q·log_softmax(z_b),           ∂/∂z_b = m_b·softmax(z_b) − q

with t' = (1 − ε)·t + ε/C the smoothed target (t one-hot for class indices) and q the target map over
its sum (m_b = 1 when that sum is > 0, else q = 0 and everything is 0). The logits row is read once for
the online (max-rescaled) logsumexp and Σ t'x, and once more to write the gradient (Liger-Kernel's habit:
the backward is then one multiply by the incoming gradient); a heat map (h·w ≤ MAX_HEAT_CELLS) is one
vector. The batch normalisations (mean over B, Σw, Σm) are left to the host, on [B] vectors.
Arithmetic is float32, or float64 for float64 logits (gradcheck).
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .limits import MAX_HEAT_CELLS  # noqa: F401 - the op's cap, read here by the tests (kernels/limits.py)

_MAX_BLOCK_C = 4096


@triton.jit
def _luab_loss_kernel(x_ptr,    # [B, C] f16/bf16/f32/f64 logits, contiguous
                      t_ptr,    # [B] i64 classes (HARD) or [B, C] float soft targets
                      cls_ptr,  # [B] f32 (f64 for f64 logits): per-sample cross-entropy
                      gx_ptr,   # [B, C] logits' dtype: softmax·Σt' − t' (COMPUTE_GRAD)
                      pp_ptr,   # [B, 2] point predictions (HAS_POINT)
                      pt_ptr,   # [B, 2] point targets
                      pl_ptr,   # [B] per-sample smooth-L1, mean over the two coordinates
                      gp_ptr,   # [B, 2] point_pred's dtype: its gradient (COMPUTE_GRAD)
                      hp_ptr,   # [B, HW] heat-map logits (HAS_HEAT)
                      ht_ptr,   # [B, HW] heat targets, >= 0
                      hl_ptr,   # [B] per-sample KL (0 for an empty target map)
                      hm_ptr,   # [B] 1 where the target map sums to > 0, else 0
                      gh_ptr,   # [B, HW] heat_pred's dtype: its gradient (COMPUTE_GRAD)
                      C, HW, eps,
                      HARD: tl.constexpr, HAS_POINT: tl.constexpr, HAS_HEAT: tl.constexpr,
                      COMPUTE_GRAD: tl.constexpr, DTYPE: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_HW: tl.constexpr):
    b = tl.program_id(0)
    b64 = b.to(tl.int64)  # B·C can pass 2**31 (B=256, C=21,843 is 5.6M; a big batch of a big head is not)
    eps = eps + tl.zeros([], DTYPE)  # compiled, a float argument is float32: ε rounded, not the arithmetic

    # ---- cross-entropy: one pass for lse, Σx and (soft) Σt, Σt·x
    x_row = x_ptr + b64 * C
    zero = tl.zeros([], DTYPE)
    mx, z, sx, st, stx = tl.full([], float("-inf"), DTYPE), zero, zero, zero, zero
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = cols < C
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(DTYPE)
        x_or_ninf = tl.where(mask, x, float("-inf"))  # the masked tail takes no softmax mass
        mx_new = tl.maximum(mx, tl.max(x_or_ninf, axis=0))
        z = z * tl.exp(mx - mx_new) + tl.sum(tl.exp(x_or_ninf - mx_new), axis=0)
        mx = mx_new
        sx += tl.sum(x, axis=0)  # the masked tail loaded as 0
        if not HARD:
            t = tl.load(t_ptr + b64 * C + cols, mask=mask, other=0.0).to(DTYPE)
            st += tl.sum(t, axis=0)
            stx += tl.sum(t * x, axis=0)
    lse = mx + tl.log(z)
    if HARD:
        y = tl.load(t_ptr + b)
        valid = (y >= 0) & (y < C)  # unchecked input (validate=False): never read outside the row
        x_y = tl.load(x_row + tl.where(valid, y, 0)).to(DTYPE)
        t_sum = tl.full([], 1.0, DTYPE)
        loss = lse - ((1.0 - eps) * x_y + eps * sx / C)
        loss = tl.where(valid, loss, float("nan"))
    else:
        t_sum = (1.0 - eps) * st + eps  # soft targets need not sum to 1 (as in F.cross_entropy)
        loss = t_sum * lse - ((1.0 - eps) * stx + eps * sx / C)
    tl.store(cls_ptr + b, loss)
    if COMPUTE_GRAD:
        g_row = gx_ptr + b64 * C
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask = cols < C
            x = tl.load(x_row + cols, mask=mask, other=0.0).to(DTYPE)
            if HARD:
                t = tl.where(cols == y, 1.0 - eps, 0.0) + eps / C
            else:
                t = (1.0 - eps) * tl.load(t_ptr + b64 * C + cols, mask=mask, other=0.0).to(DTYPE) + eps / C
            g = tl.exp(x - lse) * t_sum - t
            tl.store(g_row + cols, g.to(gx_ptr.dtype.element_ty), mask=mask)

    # ---- point: smooth-L1 (β = 1) of the two coordinates, their mean
    if HAS_POINT:
        k = tl.arange(0, 2)
        d = tl.load(pp_ptr + b64 * 2 + k).to(DTYPE) - tl.load(pt_ptr + b64 * 2 + k).to(DTYPE)
        a = tl.abs(d)
        tl.store(pl_ptr + b, tl.sum(tl.where(a < 1.0, 0.5 * d * d, a - 0.5), axis=0) * 0.5)
        if COMPUTE_GRAD:
            g = tl.minimum(tl.maximum(d, -1.0), 1.0) * 0.5
            tl.store(gp_ptr + b64 * 2 + k, g.to(gp_ptr.dtype.element_ty))

    # ---- heat: KL(q || softmax(z)) over the h·w cells, one vector
    if HAS_HEAT:
        cells = tl.arange(0, BLOCK_HW)
        mask = cells < HW
        hz = tl.load(hp_ptr + b64 * HW + cells, mask=mask, other=0.0).to(DTYPE)
        hz_or_ninf = tl.where(mask, hz, float("-inf"))
        e = tl.exp(hz_or_ninf - tl.max(hz_or_ninf, axis=0))
        s = tl.sum(e, axis=0)
        log_p = hz - (tl.max(hz_or_ninf, axis=0) + tl.log(s))
        raw = tl.load(ht_ptr + b64 * HW + cells, mask=mask, other=0.0).to(DTYPE)
        total = tl.sum(raw, axis=0)
        present = total > 0
        q = raw / tl.where(present, total, 1.0)  # an empty map stays all 0: KL 0, gradient 0
        q_log_q = tl.where(q > 0, q * tl.log(tl.where(q > 0, q, 1.0)), 0.0)  # 0·log 0 = 0, no NaN lanes
        tl.store(hl_ptr + b, tl.sum(tl.where(mask, q_log_q - q * log_p, 0.0), axis=0))
        tl.store(hm_ptr + b, tl.where(present, 1.0, 0.0).to(DTYPE))
        if COMPUTE_GRAD:
            g = tl.where(present, e / s, 0.0) - q
            tl.store(gh_ptr + b64 * HW + cells, g.to(gh_ptr.dtype.element_ty), mask=mask)


def launch_config(C: int, HW: int) -> dict:
    """Classes in blocks of ≤ 4096, a heat map in one block; more warps for wider blocks (Liger's rule)."""
    block_c, block_hw = min(triton.next_power_of_2(C), _MAX_BLOCK_C), triton.next_power_of_2(HW)
    widest = max(block_c, block_hw)
    return dict(BLOCK_C=block_c, BLOCK_HW=block_hw, num_warps=16 if widest >= 8192 else 8 if widest >= 2048 else 4)


def luab_loss_triton(logits: torch.Tensor, target: torch.Tensor, point_pred: torch.Tensor | None,
                     point_target: torch.Tensor | None, heat_pred: torch.Tensor | None,
                     heat_target: torch.Tensor | None, label_smoothing: float, compute_grad: bool,
                     out: Sequence[torch.Tensor]) -> None:
    """Fills ``out``, the op's seven outputs allocated by ``LossRows.allocate`` (luab_fast/ops/luab_loss.py):
    (cls [B], grad logits, point [B], grad point_pred, heat [B], heat mask [B], grad heat_pred), per-sample
    values in float32 (float64 for float64 logits), gradients in their input's dtype; an absent term, or a
    gradient not computed, is an empty [0] tensor. Inputs contiguous, validated, h·w ≤ MAX_HEAT_CELLS."""
    B, C = logits.shape
    if B == 0:
        return
    cls, gx, pl, gp, hl, hm, gh = out
    has_point, has_heat = point_pred is not None, heat_pred is not None
    HW = heat_pred.shape[1] * heat_pred.shape[2] if has_heat else 1
    dummy = cls  # absent tensors: never read nor written (their constexpr flag is off)
    # a·b+c contraction stays on (no fp_options): nothing here must match a CPU rounding bit for bit
    _luab_loss_kernel[(B,)](
        logits, target, cls, gx if compute_grad else dummy,
        point_pred if has_point else dummy, point_target if has_point else dummy, pl if has_point else dummy,
        gp if has_point and compute_grad else dummy,
        heat_pred if has_heat else dummy, heat_target if has_heat else dummy, hl if has_heat else dummy,
        hm if has_heat else dummy, gh if has_heat and compute_grad else dummy,
        C, HW, float(label_smoothing),
        HARD=not target.is_floating_point(), HAS_POINT=has_point, HAS_HEAT=has_heat, COMPUTE_GRAD=compute_grad,
        DTYPE=tl.float64 if cls.dtype == torch.float64 else tl.float32, **launch_config(C, HW))
