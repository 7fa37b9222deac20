"""The LUAB training loss, fused: class cross-entropy + annotator point + attention heat map (issue 5).

    loss  = cls + λp·point + λh·heat
    cls   = mean_b −Σ_c t'_bc log_softmax(x_b)_c,  t' = (1 − ε)·t + ε/C, t one-hot (int64 [B]) or soft [B, C]
    point = Σ_b w_b ℓ_b / Σ_b w_b (0 when Σw = 0),  ℓ_b = mean_k smoothL1_β=1(point_pred − point_target)_bk
    heat  = Σ_b m_b KL_b / Σ_b m_b (0 when Σm = 0), KL_b = Σ q log q − Σ q·log_softmax(heat_pred_b) over h·w,
            q = heat_target_b / its sum, m_b = [that sum > 0]

``cls`` is ``F.cross_entropy(logits, target, label_smoothing=ε)`` for class indices and for probability
targets alike (soft targets are smoothed as PyTorch does). Soft targets must be probability rows: finite,
>= 0, each summing to 1 within SIMPLEX_TOL of their dtype (PyTorch takes any row, and a row of −1s gives a
negative "loss"). Either byproduct term is dropped by passing None for its tensors; its key is then absent
from ``parts``.

Backends (``backend=`` forces one): ``"triton"`` (CUDA; CPU tensors only under ``TRITON_INTERPRET=1``): one
launch, one program per sample doing its logits row, point and heat map (luab_fast/kernels/luab_loss.py),
heat maps of h·w <= 4096 cells (larger ones dispatch to the reference); ``"reference"``: PyTorch. Value checks
(finite values, classes in range, soft targets on the simplex, weights and heat targets >= 0) run inside
the op, one device sync, so torch.compile sees no data-dependent branch; ``check_finite=False`` skips them
(the fast path).
Both backends return, from one op, the per-sample terms [B] and their unscaled gradients (Liger-Kernel's
habit); the batch normalisations run in PyTorch on the [B] vectors, so autograd hands the op grad·1/B,
grad·λp·w_b/Σw and grad·λh·m_b/Σm per sample and the op's backward is a multiply.

Losses are float32 (float64 for float64 logits) whatever the predictions' dtype; gradients come back in
each prediction's dtype. Gradients flow to ``logits``, ``point_pred`` and ``heat_pred`` only: the targets
(``target``, ``point_target``, ``point_weight``, ``heat_target``) are constants, detached even when they
require grad, as a teacher's or annotators' labels are. B = 0 is an error naming the batch size: ``cls`` is
a mean over the batch, NaN for an empty one (``F.cross_entropy``'s answer), which would poison a training run.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..kernels import HAS_TRITON, triton_runs_on
from ..kernels.limits import MAX_HEAT_CELLS  # the kernel's one-vector heat map (kernels/limits.py, no triton)

__all__ = ["LUABLoss", "luab_loss", "luab_loss_reference"]

_BACKENDS = ("reference", "triton")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# |Σ_c t_c − 1| allowed for a soft target row, by its dtype: 1e-3, the posterior rows the --labels table
# accepts (luab_fast/data/labels_table.py: CSVs round); bfloat16 one ulp of 1 (a distribution rounded to
# the dtype is off by at most half an ulp, Σ of values >= 0 each off by half an ulp of itself).
SIMPLEX_TOL = {torch.float16: 1e-3, torch.bfloat16: 2.0 ** -7, torch.float32: 1e-3, torch.float64: 1e-3}


# ---------------------------------------------------------------------------------------------- reference
def _smoothed(target: torch.Tensor, C: int, eps: float, dtype: torch.dtype) -> torch.Tensor:
    t = target.to(dtype) if target.is_floating_point() else F.one_hot(target, C).to(dtype)
    return (1 - eps) * t + eps / C


def _cls_rows(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -(t * x.log_softmax(1)).sum(1)


def _point_rows(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    d = pred - target
    return torch.where(d.abs() < 1, 0.5 * d * d, d.abs() - 0.5).mean(1)


def _heat_rows(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(KL [B], m [B], q [B, h·w]); an empty target map has q = 0, hence KL = 0."""
    z, t = pred.flatten(1), target.flatten(1)
    total = t.sum(1, keepdim=True)
    q = t / torch.where(total > 0, total, torch.ones_like(total))
    return torch.xlogy(q, q).sum(1) - (q * z.log_softmax(1)).sum(1), (total[:, 0] > 0).to(z.dtype), q


def _combine(cls_rows, point_rows, point_weight, heat_rows, heat_mask, lambda_point, lambda_heat):
    """(loss, parts) from the per-sample terms: the batch normalisations, differentiable."""
    parts = {"cls": cls_rows.mean()}  # NaN for B = 0, like F.cross_entropy
    loss = parts["cls"]
    if point_rows is not None:
        w = point_weight.detach().to(point_rows.dtype)
        total = w.sum()
        parts["point"] = (w * point_rows).sum() / torch.where(total > 0, total, torch.ones_like(total))
        loss = loss + lambda_point * parts["point"]
    if heat_rows is not None:
        parts["heat"] = (heat_mask * heat_rows).sum() / heat_mask.sum().clamp_min(1)
        loss = loss + lambda_heat * parts["heat"]
    return loss, {k: v.detach() for k, v in parts.items()}


def luab_loss_reference(logits, target, point_pred=None, point_target=None, point_weight=None, heat_pred=None,
                        heat_target=None, lambda_point=1.0, lambda_heat=1.0, label_smoothing=0.0):
    """The module docstring's formulas in eager PyTorch, differentiable by autograd: ``(loss, parts)``.

    Expects inputs that :func:`luab_loss` would accept (it checks nothing); targets are detached.
    """
    wide = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(wide)
    cls_rows = _cls_rows(x, _smoothed(target.detach(), x.shape[1], label_smoothing, wide))
    point_rows = heat_rows = heat_mask = None
    if point_pred is not None:
        point_rows = _point_rows(point_pred.to(wide), point_target.detach().to(wide))
    if heat_pred is not None:
        heat_rows, heat_mask, _ = _heat_rows(heat_pred.to(wide), heat_target.detach().to(wide))
    return _combine(cls_rows, point_rows, point_weight, heat_rows, heat_mask, lambda_point, lambda_heat)


def _reference_rows(logits, target, point_pred, point_target, heat_pred, heat_target, eps, compute_grad):
    """The op's "reference" body: per-sample terms and their gradients laid out as the kernel's. The gradients
    are closed forms (tests compare them with autograd of luab_loss_reference): a custom op's body runs below
    the Autograd dispatch key, where autograd records nothing."""
    wide = torch.float64 if logits.dtype == torch.float64 else torch.float32

    def empty():  # a fresh one per slot: a custom op's outputs must not alias one another
        return logits.new_empty((0,), dtype=wide)

    x = logits.to(wide)
    t = _smoothed(target, x.shape[1], eps, wide)
    out = [_cls_rows(x, t), (x.softmax(1) * t.sum(1, keepdim=True) - t).to(logits.dtype) if compute_grad else empty()]
    if point_pred is not None:
        pp, pt = point_pred.to(wide), point_target.to(wide)
        out += [_point_rows(pp, pt), ((pp - pt).clamp(-1, 1) / 2).to(point_pred.dtype) if compute_grad else empty()]
    else:
        out += [empty(), empty()]
    if heat_pred is not None:
        z = heat_pred.to(wide)
        kl, mask, q = _heat_rows(z, heat_target.to(wide))
        g = (z.flatten(1).softmax(1) * mask[:, None] - q).view_as(z).to(heat_pred.dtype)
        out += [kl, mask, g if compute_grad else empty()]
    else:
        out += [empty(), empty(), empty()]
    return tuple(out)


# ---------------------------------------------------------------------------------------------- checks
def _check_values(logits, target, point_pred, point_target, point_weight, heat_pred, heat_target) -> None:
    """Data-dependent checks, evaluated on the device and read back in one sync."""
    problems: list[tuple[str, torch.Tensor]] = []
    C = logits.shape[1]
    named = [("logits", logits), ("target", target if target.is_floating_point() else None),
             ("point_pred", point_pred), ("point_target", point_target), ("point_weight", point_weight),
             ("heat_pred", heat_pred), ("heat_target", heat_target)]
    for name, t in named:
        if t is not None and t.numel():
            problems.append((f"{name} must be finite, got NaN or inf", ~torch.isfinite(t).all()))
    if not target.is_floating_point() and target.numel():
        problems.append((f"target must hold classes in [0, C={C})", ((target < 0) | (target >= C)).any()))
    if target.is_floating_point() and target.numel():
        tol = SIMPLEX_TOL[target.dtype]
        row_sum = target.sum(1, dtype=torch.float64 if target.dtype == torch.float64 else torch.float32)
        problems.append((f"target (soft) must hold probability rows: each value >= 0 and each row summing to 1 "
                         f"(within {tol:.3g} for {target.dtype}); normalise it, e.g. with softmax",
                         (target < 0).any() | ((row_sum - 1).abs() > tol).any()))
    if point_weight is not None and point_weight.numel():
        problems.append(("point_weight must be >= 0, got a negative weight", (point_weight < 0).any()))
    if heat_target is not None and heat_target.numel():
        problems.append(("heat_target must be >= 0, got a negative value", (heat_target < 0).any()))
    if not problems:
        return
    failed = torch.stack([bad for _, bad in problems]).tolist()  # the one device sync
    for (message, _), bad in zip(problems, failed):
        if bad:
            raise ValueError(message + _details(message, logits, target))


def _details(message: str, logits: torch.Tensor, target: torch.Tensor) -> str:
    """What came, for the message (more syncs, on the error path only)."""
    if message.startswith("target must hold classes"):
        bad = ((target < 0) | (target >= logits.shape[1])).nonzero()[0, 0]
        return f", got target[{int(bad)}] = {int(target[bad])}"
    if message.startswith("target (soft)"):
        row_sum = target.double().sum(1)
        bad = int(((target < 0).any(1) | ((row_sum - 1).abs() > SIMPLEX_TOL[target.dtype])).nonzero()[0, 0])
        return f", got row {bad} with minimum {float(target[bad].min()):g} and sum {float(row_sum[bad]):.6g}"
    return ""


def _check_tensor(name: str, t, shape: tuple, what: str, dtypes=_FLOATS, device=None) -> None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must be Tensor{list(shape)} ({what}), got shape {tuple(getattr(t, 'shape', ()))}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} must be one of {[str(d) for d in dtypes]}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on the device of logits ({device}), got {t.device}")


def _check_options(lambda_point, lambda_heat, label_smoothing) -> None:
    for name, v in (("lambda_point", lambda_point), ("lambda_heat", lambda_heat)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    s = label_smoothing
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {s!r}")


def _check_static(logits, target, point, heat) -> None:
    """Shapes, dtypes and devices (no data read): cheap, and visible to torch.compile."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be Tensor[B, C] with C >= 1, got shape {tuple(getattr(logits, 'shape', ()))}")
    _check_tensor("logits", logits, logits.shape, "B, C")
    if logits.shape[0] == 0:  # static: torch.compile sees no data-dependent branch
        raise ValueError("logits must hold at least one sample (B >= 1): the loss is a mean over the batch, "
                         "NaN for an empty one, got B=0; skip empty batches")
    (B, C), dev = logits.shape, logits.device
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        _check_tensor("target", target, (B, C), "soft targets B, C", device=dev)
    else:
        _check_tensor("target", target, (B,), "int64 classes, or float soft targets [B, C]", (torch.int64,), dev)
    for names, group in ((("point_pred", "point_target", "point_weight"), point), (("heat_pred", "heat_target"), heat)):
        if any(t is None for t in group) and not all(t is None for t in group):
            missing = [n for n, t in zip(names, group) if t is None]
            raise ValueError(f"{missing[0]} must be given with {', '.join(names)} (or all of them None), got None")
    if point[0] is not None:
        _check_tensor("point_pred", point[0], (B, 2), "B, 2", device=dev)
        _check_tensor("point_target", point[1], (B, 2), "B, 2", device=dev)
        _check_tensor("point_weight", point[2], (B,), "B", device=dev)
    if heat[0] is not None:
        hp = heat[0]
        if not isinstance(hp, torch.Tensor) or hp.dim() != 3 or hp.shape[1] < 1 or hp.shape[2] < 1:
            raise ValueError(f"heat_pred must be Tensor[B={B}, h, w] with h, w >= 1, "
                             f"got shape {tuple(getattr(hp, 'shape', ()))}")
        _check_tensor("heat_pred", hp, (B, hp.shape[1], hp.shape[2]), "B, h, w", device=dev)
        _check_tensor("heat_target", heat[1], hp.shape, "B, h, w like heat_pred", device=dev)


def _pick_backend(device: torch.device, backend: Optional[str], heat_cells: int) -> str:
    """CUDA + triton → "triton" (heat maps up to MAX_HEAT_CELLS cells), otherwise "reference"."""
    if backend is None:
        fits = heat_cells <= MAX_HEAT_CELLS
        return "triton" if device.type == "cuda" and HAS_TRITON and fits else "reference"  # speed, not answer
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS} or None, got {backend!r}")
    if backend == "triton" and not triton_runs_on(device.type):
        raise ValueError(f"backend='triton' needs CUDA tensors and triton (CPU tensors only under "
                         f"TRITON_INTERPRET=1), got device {device}, triton {'present' if HAS_TRITON else 'absent'}")
    if backend == "triton" and heat_cells > MAX_HEAT_CELLS:
        raise ValueError(f"heat_pred must have h·w <= {MAX_HEAT_CELLS} cells for backend='triton', got {heat_cells}")
    return backend


# ------------------------------------------------------------------------------------- torch.library op
@torch.library.custom_op("luab_fast::luab_loss", mutates_args=())
def _luab_loss_op(logits: torch.Tensor, target: torch.Tensor, point_pred: Optional[torch.Tensor],
                  point_target: Optional[torch.Tensor], point_weight: Optional[torch.Tensor],
                  heat_pred: Optional[torch.Tensor], heat_target: Optional[torch.Tensor], label_smoothing: float,
                  backend: str, check_finite: bool, compute_grad: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                             torch.Tensor]:
    """(cls [B], grad logits, point [B], grad point_pred, heat [B], heat mask [B], grad heat_pred); an absent
    term or uncomputed gradient is an empty [0] tensor. ``point_weight`` enters only to be checked."""
    if check_finite:
        _check_values(logits, target, point_pred, point_target, point_weight, heat_pred, heat_target)
    args = [None if t is None else t.detach().contiguous()
            for t in (logits, target, point_pred, point_target, heat_pred, heat_target)]
    if backend == "triton":
        from ..kernels.luab_loss import luab_loss_triton

        return luab_loss_triton(*args, label_smoothing, compute_grad)
    return _reference_rows(*args, label_smoothing, compute_grad)


@_luab_loss_op.register_fake
def _(logits, target, point_pred, point_target, point_weight, heat_pred, heat_target, label_smoothing, backend,
      check_finite, compute_grad):
    B = logits.shape[0]
    wide = torch.float64 if logits.dtype == torch.float64 else torch.float32

    def rows(present):
        return logits.new_empty((B if present else 0,), dtype=wide)

    def grad(pred):
        if pred is not None and compute_grad:
            return torch.empty_like(pred, memory_format=torch.contiguous_format)
        return logits.new_empty((0,), dtype=wide)

    return (rows(True), grad(logits), rows(point_pred is not None), grad(point_pred), rows(heat_pred is not None),
            rows(heat_pred is not None), grad(heat_pred))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1], output[3], output[6])
    ctx.shapes = [None if t is None else t.shape for t in (inputs[0], inputs[2], inputs[5])]


def _backward(ctx, g_cls, _g1, g_point, _g3, g_heat, _g5, _g6):
    grads = []
    for g_rows, stored, shape in zip((g_cls, g_point, g_heat), ctx.saved_tensors, ctx.shapes):
        if shape is None:
            grads.append(None)
            continue
        if stored.shape != shape:
            raise RuntimeError("luab_loss was run without its gradients (no prediction required grad when it "
                               "ran); run it again with grad enabled")
        grads.append((g_rows.view(-1, *[1] * (stored.dim() - 1)) * stored).to(stored.dtype))
    return grads[0], None, grads[1], None, None, grads[2], None, None, None, None, None


_luab_loss_op.register_autograd(_backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------------------- public API
def luab_loss(logits: torch.Tensor, target: torch.Tensor, point_pred: Optional[torch.Tensor] = None,
              point_target: Optional[torch.Tensor] = None, point_weight: Optional[torch.Tensor] = None,
              heat_pred: Optional[torch.Tensor] = None, heat_target: Optional[torch.Tensor] = None,
              lambda_point: float = 1.0, lambda_heat: float = 1.0, label_smoothing: float = 0.0,
              backend: Optional[str] = None, check_finite: bool = True) -> tuple[torch.Tensor, dict]:
    """The LUAB loss (module docstring), fused on the GPU.

    Args:
        logits: Tensor[B, C] float16/bfloat16/float32/float64.
        target: Tensor[B] int64 classes in [0, C), or float Tensor[B, C] soft targets: probability rows
            (>= 0, each summing to 1 within SIMPLEX_TOL[dtype]).
        point_pred, point_target: Tensor[B, 2] float; point_weight: Tensor[B] float >= 0 (None for all three
            drops the term).
        heat_pred: Tensor[B, h, w] float (attention logits); heat_target: Tensor[B, h, w] float >= 0, any
            scale (normalised per map); an all-zero map is skipped (None for both drops the term).
        lambda_point, lambda_heat: finite weights >= 0. label_smoothing: ε in [0, 1], PyTorch's.
        backend: None (dispatch: "triton" on CUDA for h·w <= 4096, else "reference"), "reference", "triton".
        check_finite: check the values (finite predictions and targets, classes in range, soft targets on
            the simplex, weights and heat targets >= 0) at the cost of one device sync. False is the fast
            path for inputs known good: the result is then NaN (triton) or an indexing error (reference) for
            an out-of-range class, and whatever the arithmetic gives for other bad values.

    Returns:
        (loss, parts): the float32 (float64 for float64 logits) scalar loss, and a dict of the present
        terms "cls", "point", "heat" as detached scalars.
    """
    point, heat = (point_pred, point_target, point_weight), (heat_pred, heat_target)
    _check_static(logits, target, point, heat)
    _check_options(lambda_point, lambda_heat, label_smoothing)
    cells = heat_pred.shape[1] * heat_pred.shape[2] if heat_pred is not None else 0
    preds = [t for t in (logits, point_pred, heat_pred) if t is not None]
    compute_grad = torch.is_grad_enabled() and any(t.requires_grad for t in preds)
    cls_rows, _, point_rows, _, heat_rows, heat_mask, _ = _luab_loss_op(
        logits, target.detach(), point_pred, None if point_target is None else point_target.detach(),
        None if point_weight is None else point_weight.detach(), heat_pred,
        None if heat_target is None else heat_target.detach(), float(label_smoothing),
        _pick_backend(logits.device, backend, cells), bool(check_finite), compute_grad)
    return _combine(cls_rows, point_rows if point_pred is not None else None, point_weight,
                    heat_rows if heat_pred is not None else None, heat_mask, lambda_point, lambda_heat)


class LUABLoss(torch.nn.Module):
    """:func:`luab_loss` with its options fixed: ``LUABLoss(...)(logits, target, ...)`` → (loss, parts)."""

    def __init__(self, lambda_point: float = 1.0, lambda_heat: float = 1.0, label_smoothing: float = 0.0,
                 backend: Optional[str] = None, *, check_finite: bool = True) -> None:
        super().__init__()
        _check_options(lambda_point, lambda_heat, label_smoothing)  # fail at construction, not mid-training
        if backend is not None and backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS} or None, got {backend!r}")
        self.lambda_point, self.lambda_heat, self.label_smoothing = lambda_point, lambda_heat, label_smoothing
        self.backend, self.check_finite = backend, check_finite

    def forward(self, logits: torch.Tensor, target: torch.Tensor, point_pred: Optional[torch.Tensor] = None,
                point_target: Optional[torch.Tensor] = None, point_weight: Optional[torch.Tensor] = None,
                heat_pred: Optional[torch.Tensor] = None, heat_target: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, dict]:
        return luab_loss(logits, target, point_pred, point_target, point_weight, heat_pred, heat_target,
                         self.lambda_point, self.lambda_heat, self.label_smoothing, self.backend, self.check_finite)

    def extra_repr(self) -> str:
        return (f"lambda_point={self.lambda_point}, lambda_heat={self.lambda_heat}, "
                f"label_smoothing={self.label_smoothing}, backend={self.backend!r}")
