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
heat maps of h·w <= 4096 cells (larger ones dispatch to the reference; ``pick_backend(fits=...)``);
``"reference"``: PyTorch (``_rows_reference``: the per-sample rows and their closed-form gradients; the
differentiable formulas themselves are ``luab_loss_reference``, the tests' oracle). Value checks (finite values,
classes in range, soft targets on the simplex, weights and heat targets >= 0) run inside the op, one device
sync, so torch.compile sees no data-dependent branch; ``validate=False`` skips them (the fast path;
``check_finite=`` is its former name).
Both backends return, from one op, the per-sample terms [B] and their unscaled gradients (Liger-Kernel's
habit), named by ``LossRows``; the batch normalisations run in PyTorch on the [B] vectors, so autograd hands
the op grad·1/B, grad·λp·w_b/Σw and grad·λh·m_b/Σm per sample and the op's backward is a multiply.

Losses are float32 (float64 for float64 logits) whatever the predictions' dtype; gradients come back in
each prediction's dtype. Gradients flow to ``logits``, ``point_pred`` and ``heat_pred`` only: the targets
(``target``, ``point_target``, ``point_weight``, ``heat_target``) are constants, detached even when they
require grad, as a teacher's or annotators' labels are. B = 0 is an error naming the batch size: ``cls`` is
a mean over the batch, NaN for an empty one (``F.cross_entropy``'s answer), which would poison a training run.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..kernels.limits import MAX_HEAT_CELLS  # the kernel's one-vector heat map (kernels/limits.py, no triton)
from ._checks import Problem, first_bad, raise_first, renamed_keyword
from ._dispatch import check_backend_name, pick_backend

__all__ = ["LUABLoss", "LossRows", "luab_loss", "luab_loss_reference"]

_BACKENDS = ("reference", "triton")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# |Σ_c t_c − 1| allowed for a soft target row, by its dtype: 1e-3, the posterior rows the --labels table
# accepts (luab_fast/data/labels_table.py: CSVs round); bfloat16 one ulp of 1 (a distribution rounded to
# the dtype is off by at most half an ulp, Σ of values >= 0 each off by half an ulp of itself).
SIMPLEX_TOL = {torch.float16: 1e-3, torch.bfloat16: 2.0 ** -7, torch.float32: 1e-3, torch.float64: 1e-3}


def _wide(logits: torch.Tensor) -> torch.dtype:
    """The losses' dtype: float64 for float64 logits, else float32."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


class LossRows(NamedTuple):
    """The op's seven outputs: the per-sample terms [B] (in ``_wide(logits)``) and their unscaled gradients
    (each in its prediction's dtype and shape). An absent term, or a gradient not computed, is an empty [0]
    tensor of the terms' dtype, a fresh one per slot (a custom op's outputs must not alias one another)."""

    cls_rows: torch.Tensor     # [B] −Σ_c t'_c log_softmax(x)_c
    grad_logits: torch.Tensor  # [B, C] softmax(x)·Σ_c t'_c − t'
    point_rows: torch.Tensor   # [B] mean smooth-L1
    grad_point: torch.Tensor   # [B, 2] clamp(pred − target, −1, 1) / 2
    heat_rows: torch.Tensor    # [B] KL(q ‖ softmax(heat_pred))
    heat_mask: torch.Tensor    # [B] 1 where the target map has mass
    grad_heat: torch.Tensor    # [B, h, w] softmax·m − q

    @classmethod
    def allocate(cls, logits: torch.Tensor, point_pred: Optional[torch.Tensor], heat_pred: Optional[torch.Tensor],
                 compute_grad: bool) -> LossRows:
        """Uninitialised outputs of the right shapes and dtypes: the fake implementation's, and the buffers the
        Triton kernel fills."""
        B, wide = logits.shape[0], _wide(logits)

        def rows(present: bool) -> torch.Tensor:
            return logits.new_empty((B if present else 0,), dtype=wide)

        def grad(pred: Optional[torch.Tensor]) -> torch.Tensor:
            if pred is not None and compute_grad:
                return torch.empty_like(pred, memory_format=torch.contiguous_format)
            return logits.new_empty((0,), dtype=wide)

        return cls(rows(True), grad(logits), rows(point_pred is not None), grad(point_pred),
                   rows(heat_pred is not None), rows(heat_pred is not None), grad(heat_pred))


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
    wide = _wide(logits)
    x = logits.to(wide)
    cls_rows = _cls_rows(x, _smoothed(target.detach(), x.shape[1], label_smoothing, wide))
    point_rows = heat_rows = heat_mask = None
    if point_pred is not None:
        point_rows = _point_rows(point_pred.to(wide), point_target.detach().to(wide))
    if heat_pred is not None:
        heat_rows, heat_mask, _ = _heat_rows(heat_pred.to(wide), heat_target.detach().to(wide))
    return _combine(cls_rows, point_rows, point_weight, heat_rows, heat_mask, lambda_point, lambda_heat)


def _rows_reference(logits, target, point_pred, point_target, heat_pred, heat_target, eps,
                    compute_grad) -> LossRows:
    """The op's "reference" backend: the per-sample terms and their gradients, as the kernel's. The gradients
    are closed forms (tests compare them with autograd of luab_loss_reference): a custom op's body runs below
    the Autograd dispatch key, where autograd records nothing."""
    wide = _wide(logits)
    out = {name: logits.new_empty((0,), dtype=wide) for name in LossRows._fields}  # absent: empty [0], fresh each
    x = logits.to(wide)
    t = _smoothed(target, x.shape[1], eps, wide)
    out["cls_rows"] = _cls_rows(x, t)
    if compute_grad:
        out["grad_logits"] = (x.softmax(1) * t.sum(1, keepdim=True) - t).to(logits.dtype)
    if point_pred is not None:
        pp, pt = point_pred.to(wide), point_target.to(wide)
        out["point_rows"] = _point_rows(pp, pt)
        if compute_grad:
            out["grad_point"] = ((pp - pt).clamp(-1, 1) / 2).to(point_pred.dtype)
    if heat_pred is not None:
        z = heat_pred.to(wide)
        out["heat_rows"], out["heat_mask"], q = _heat_rows(z, heat_target.to(wide))
        if compute_grad:
            out["grad_heat"] = (z.flatten(1).softmax(1) * out["heat_mask"][:, None] - q).view_as(z).to(heat_pred.dtype)
    return LossRows(**out)


# ---------------------------------------------------------------------------------------------- checks
def _value_problems(logits, target, point_pred, point_target, point_weight, heat_pred, heat_target) -> list[Problem]:
    """The data-dependent checks, for ``raise_first`` (one device sync)."""
    problems: list[Problem] = []
    C = logits.shape[1]
    named = [("logits", logits), ("target", target if target.is_floating_point() else None),
             ("point_pred", point_pred), ("point_target", point_target), ("point_weight", point_weight),
             ("heat_pred", heat_pred), ("heat_target", heat_target)]
    for name, t in named:
        if t is not None and t.numel():
            problems.append(Problem(f"{name} must be finite, got NaN or inf", ~torch.isfinite(t).all()))
    if not target.is_floating_point() and target.numel():
        out = (target < 0) | (target >= C)
        problems.append(Problem(f"target must hold classes in [0, C={C})", out.any(),
                                lambda: first_bad("target", target, out)))
    if target.is_floating_point() and target.numel():
        tol = SIMPLEX_TOL[target.dtype]
        row_sum = target.sum(1, dtype=torch.float64 if target.dtype == torch.float64 else torch.float32)
        problems.append(Problem(f"target (soft) must hold probability rows: each value >= 0 and each row summing "
                                f"to 1 (within {tol:.3g} for {target.dtype}); normalise it, e.g. with softmax",
                                (target < 0).any() | ((row_sum - 1).abs() > tol).any(),
                                lambda: _off_simplex(target, tol)))
    if point_weight is not None and point_weight.numel():
        problems.append(Problem("point_weight must be >= 0, got a negative weight", (point_weight < 0).any()))
    if heat_target is not None and heat_target.numel():
        problems.append(Problem("heat_target must be >= 0, got a negative value", (heat_target < 0).any()))
    return problems


def _off_simplex(target: torch.Tensor, tol: float) -> str:
    """The first soft-target row off the simplex, for the message (summed in float64)."""
    row_sum = target.double().sum(1)
    bad = int(((target < 0).any(1) | ((row_sum - 1).abs() > tol)).nonzero()[0, 0])
    return f", got row {bad} with minimum {float(target[bad].min()):g} and sum {float(row_sum[bad]):.6g}"


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


# ------------------------------------------------------------------------------------- torch.library op
@torch.library.custom_op("luab_fast::luab_loss", mutates_args=())
def _luab_loss_op(logits: torch.Tensor, target: torch.Tensor, point_pred: Optional[torch.Tensor],
                  point_target: Optional[torch.Tensor], point_weight: Optional[torch.Tensor],
                  heat_pred: Optional[torch.Tensor], heat_target: Optional[torch.Tensor], label_smoothing: float,
                  backend: str, validate: bool, compute_grad: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                             torch.Tensor]:
    """The seven ``LossRows``; ``point_weight`` enters only to be checked."""
    if validate:
        raise_first(_value_problems(logits, target, point_pred, point_target, point_weight, heat_pred, heat_target))
    args = [None if t is None else t.detach().contiguous()
            for t in (logits, target, point_pred, point_target, heat_pred, heat_target)]
    if backend == "triton":
        from ..kernels.luab_loss import luab_loss_triton

        out = LossRows.allocate(args[0], args[2], args[4], compute_grad)
        luab_loss_triton(*args, label_smoothing, compute_grad, out)
        return out
    return _rows_reference(*args, label_smoothing, compute_grad)


@_luab_loss_op.register_fake
def _(logits, target, point_pred, point_target, point_weight, heat_pred, heat_target, label_smoothing, backend,
      validate, compute_grad):
    return LossRows.allocate(logits, point_pred, heat_pred, compute_grad)


def _setup_context(ctx, inputs, output):
    out = LossRows(*output)
    ctx.save_for_backward(out.grad_logits, out.grad_point, out.grad_heat)
    ctx.shapes = [None if t is None else t.shape for t in (inputs[0], inputs[2], inputs[5])]


def _backward(ctx, *grad_outputs):
    g = LossRows(*grad_outputs)  # only the per-sample terms enter the loss: the gradients' own are unused
    grads = []
    for g_rows, stored, shape in zip((g.cls_rows, g.point_rows, g.heat_rows), ctx.saved_tensors, ctx.shapes):
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
              backend: Optional[str] = None, validate: bool = True, *,
              check_finite: Optional[bool] = None) -> tuple[torch.Tensor, dict]:
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
        validate: check the values (finite predictions and targets, classes in range, soft targets on
            the simplex, weights and heat targets >= 0) at the cost of one device sync. False is the fast
            path for inputs known good: the result is then NaN (triton) or an indexing error (reference) for
            an out-of-range class, and whatever the arithmetic gives for other bad values.
        check_finite: the former name of ``validate`` (deprecated: DeprecationWarning).

    Returns:
        (loss, parts): the float32 (float64 for float64 logits) scalar loss, and a dict of the present
        terms "cls", "point", "heat" as detached scalars.
    """
    _, validate = renamed_keyword("luab_loss", "validate", validate, True, "check_finite", check_finite)
    point, heat = (point_pred, point_target, point_weight), (heat_pred, heat_target)
    _check_static(logits, target, point, heat)
    _check_options(lambda_point, lambda_heat, label_smoothing)
    cells = heat_pred.shape[1] * heat_pred.shape[2] if heat_pred is not None else 0
    backend = pick_backend(logits.device, backend, backends=_BACKENDS, fits=cells <= MAX_HEAT_CELLS,
                           misfit=f"heat_pred must have h·w <= {MAX_HEAT_CELLS} cells for backend='triton', "
                                  f"got {cells}")
    preds = [t for t in (logits, point_pred, heat_pred) if t is not None]
    compute_grad = torch.is_grad_enabled() and any(t.requires_grad for t in preds)
    rows = LossRows(*_luab_loss_op(
        logits, target.detach(), point_pred, None if point_target is None else point_target.detach(),
        None if point_weight is None else point_weight.detach(), heat_pred,
        None if heat_target is None else heat_target.detach(), float(label_smoothing), backend, bool(validate),
        compute_grad))
    return _combine(rows.cls_rows, rows.point_rows if point_pred is not None else None, point_weight,
                    rows.heat_rows if heat_pred is not None else None, rows.heat_mask, lambda_point, lambda_heat)


class LUABLoss(torch.nn.Module):
    """:func:`luab_loss` with its options fixed: ``LUABLoss(...)(logits, target, ...)`` → (loss, parts)."""

    def __init__(self, lambda_point: float = 1.0, lambda_heat: float = 1.0, label_smoothing: float = 0.0,
                 backend: Optional[str] = None, *, validate: bool = True, check_finite: Optional[bool] = None) -> None:
        super().__init__()
        _, validate = renamed_keyword("LUABLoss", "validate", validate, True, "check_finite", check_finite)
        _check_options(lambda_point, lambda_heat, label_smoothing)  # fail at construction, not mid-training
        check_backend_name(backend, _BACKENDS)
        self.lambda_point, self.lambda_heat, self.label_smoothing = lambda_point, lambda_heat, label_smoothing
        self.backend, self.validate = backend, validate

    def forward(self, logits: torch.Tensor, target: torch.Tensor, point_pred: Optional[torch.Tensor] = None,
                point_target: Optional[torch.Tensor] = None, point_weight: Optional[torch.Tensor] = None,
                heat_pred: Optional[torch.Tensor] = None, heat_target: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, dict]:
        return luab_loss(logits, target, point_pred, point_target, point_weight, heat_pred, heat_target,
                         self.lambda_point, self.lambda_heat, self.label_smoothing, self.backend, self.validate)

    def extra_repr(self) -> str:
        return (f"lambda_point={self.lambda_point}, lambda_heat={self.lambda_heat}, "
                f"label_smoothing={self.label_smoothing}, backend={self.backend!r}")
