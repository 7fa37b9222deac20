"""ReLabel's soft-target cross-entropy, fused: ``relabel_cross_entropy(logits, scores, indices, boxes)``.

    loss = mean_b [ logsumexp(x_b) − Σ_c t_bc x_bc ],   t = label_pool_targets(scores, indices, boxes, C)

(ReLabel's training loss, ../shared/docs/label-pooling.md §7 step 3). On the GPU one Triton launch pools the label
maps, forms the target's softmax statistics and the loss and its gradient without ever writing t
(luab_fast/kernels/relabel_cross_entropy.py, the closed form of §6). Elsewhere the targets come from
``label_pool_targets`` (the C++ kernel on the CPU) and the loss from PyTorch. Both backends return the
per-sample loss and ``softmax(x) − t`` from one op, so the backward is a multiply (Liger-Kernel's habit).

The loss is float32 (float64 for float64 logits) whatever the logits' dtype; gradients come back in the
logits' dtype. The targets are constants (the teacher is not trained): no gradient flows to ``scores``.
"""

from __future__ import annotations

from typing import Optional

import torch

from ._checks import Problem, raise_first
from ._dispatch import pick_backend
from ._label_pool_core import check_static, pool_label_maps, value_problems

__all__ = ["relabel_cross_entropy", "relabel_cross_entropy_reference"]

_REDUCTIONS = ("mean", "sum", "none")
_LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def relabel_cross_entropy_reference(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample loss, softmax(x) − t) of soft targets ``targets`` [B, C], written for clarity."""
    wide = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x, t = logits.to(wide), targets.to(wide)
    loss = torch.logsumexp(x, 1) - (t * x).sum(1)
    return loss, (x.softmax(1) - t).to(logits.dtype)


@torch.library.custom_op("luab_fast::relabel_cross_entropy", mutates_args=())
def _relabel_ce_op(logits: torch.Tensor, scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor,
                   rows: Optional[torch.Tensor], legacy: bool, backend: str, validate: bool,
                   compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample loss [B], softmax(x) − t [B, C] or an empty tensor when not ``compute_grad``)."""
    logits = logits.detach().contiguous()
    C = logits.shape[1]
    # read back with the label maps' checks, in their one sync: F.cross_entropy would return NaN
    extra = [Problem("logits must be finite, got NaN or inf", ~torch.isfinite(logits).all())] if logits.numel() else []
    if backend == "triton":
        from ..kernels.relabel_cross_entropy import relabel_ce_triton

        if validate:
            raise_first([*extra, *value_problems(scores, indices, boxes, C, rows)])
        return relabel_ce_triton(logits, scores.detach().contiguous(), indices.detach().contiguous(),
                                 boxes.detach().float().contiguous(),
                                 None if rows is None else rows.detach().long().contiguous(), legacy, compute_grad)
    targets = pool_label_maps(scores, indices, boxes, rows, C, 1, 1, legacy, True, backend, validate,
                              extra).flatten(1)
    loss, grad = relabel_cross_entropy_reference(logits, targets)
    return loss, grad if compute_grad else grad.new_empty((0,))


@_relabel_ce_op.register_fake
def _(logits, scores, indices, boxes, rows, legacy, backend, validate, compute_grad):
    B, C = logits.shape
    loss = logits.new_empty((B,), dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)
    return loss, logits.new_empty((B, C) if compute_grad else (0,))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.logits_shape = inputs[0].shape


def _backward(ctx, grad_loss, _grad_of_grad):
    (g,) = ctx.saved_tensors
    if g.numel() != ctx.logits_shape.numel():
        raise RuntimeError("relabel_cross_entropy was run without its gradient (logits did not require grad "
                           "when it ran); run it again with grad enabled")
    return (grad_loss[:, None] * g).to(g.dtype), None, None, None, None, None, None, None, None


_relabel_ce_op.register_autograd(_backward, setup_context=_setup_context)


def relabel_cross_entropy(logits: torch.Tensor, scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor,
                          box_order: str = "xyxy", reduction: str = "mean", backend: Optional[str] = None, *,
                          rows: Optional[torch.Tensor] = None, validate: bool = True) -> torch.Tensor:
    """Cross-entropy of ``logits`` against ReLabel's pooled soft targets, fused.

    Args:
        logits: Tensor[B, C] float16/bfloat16/float32/float64 (C = the label maps' class count).
        scores, indices: top-k label maps [B, K, S, S] (or the store's [N, K, S, S] with ``rows``), as for
            :func:`luab_fast.ops.label_pool`.
        boxes: Tensor[B, 4] float32 (x0, y0, x1, y1) normalised crop boxes.
        box_order: "xyxy" or "legacy" (the official code's swapped axes), as for ``label_pool``.
        reduction: "mean" (ReLabel's), "sum" or "none" (per-sample [B]).
        backend: None (dispatch: "triton" on CUDA, else the targets from "cpu"/"reference" + PyTorch).
        rows: Tensor[B] int64 rows into a store-sized ``scores``/``indices``.
        validate: check the label-map values (one device sync on a GPU).

    Returns:
        float32 loss (float64 for float64 logits): a scalar, or [B] for ``reduction="none"``. B = 0 gives
        a 0 sum or an empty tensor, as ``torch.nn.functional.cross_entropy`` does; its mean is an error
        (torch's is NaN).

    Bad input raises ValueError naming the argument: shapes, dtypes and options always; the values (finite
    logits, the label maps' checks) when ``validate``.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be Tensor[B, C] with C >= 1, got shape {tuple(getattr(logits, 'shape', ()))}")
    if logits.dtype not in _LOGIT_DTYPES:
        raise ValueError(f"logits must be float16, bfloat16, float32 or float64, got {logits.dtype}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if reduction == "mean" and logits.shape[0] == 0:
        raise ValueError("logits must hold at least one sample for reduction='mean' (the mean of no losses is "
                         "NaN), got B=0; use reduction='sum' or 'none' for a batch that may be empty")
    check_static(scores, indices, boxes, logits.shape[1], box_order, rows)
    if boxes.shape[0] != logits.shape[0]:
        raise ValueError(f"logits must have one row per box: boxes has {boxes.shape[0]}, got {logits.shape[0]}")
    if logits.device != scores.device:
        raise ValueError(f"logits must be on the device of scores ({scores.device}), got {logits.device}")
    compute_grad = logits.requires_grad and torch.is_grad_enabled()
    per_sample, _ = _relabel_ce_op(logits, scores, indices, boxes, rows, box_order == "legacy",
                                   pick_backend(logits.device, backend), bool(validate), compute_grad)
    if reduction == "mean":
        return per_sample.mean()
    return per_sample.sum() if reduction == "sum" else per_sample
