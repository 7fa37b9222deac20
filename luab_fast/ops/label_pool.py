"""LabelPooling (ReLabel, Yun et al., CVPR 2021, arXiv 2101.05022): top-k label maps pooled over crop boxes.

``label_pool(scores[B,K,S,S], indices[B,K,S,S], boxes[B,4], num_classes)`` → pooled scores ``[B, C]``
(``[B, C, oh, ow]`` for ``output_size != 1``), the RoIAlign of the dense map
``D[b, c, y, x] = scores[b, k, y, x] if indices[b, k, y, x] == c else 0`` over each box, with ReLabel's
arithmetic: roi_align rows ``fl(fl(box·S) − 0.5)``, ``spatial_scale=1, sampling_ratio=-1, aligned=False``
(../shared/docs/label-pooling.md §2.3 and §7).

Box order (../shared/docs/label-pooling.md §4): ``boxes`` are the project's float32 ``(x0, y0, x1, y1)`` normalised.
``box_order="xyxy"`` pools that region of a map stored rows first (``[.., y, x]``): correct.
``box_order="legacy"`` hands roi_align ``(y0, x0, y1, x1)`` like the official ReLabel code (its coords are
``(top, left, bottom, right)`` read as ``(x1, y1, x2, y2)``), i.e. it pools the transposed map; it
reproduces the official targets bit for bit.

Backends (the house rule, ``luab_fast/ops/_dispatch.py``; ``backend=`` forces one):
  ``"reference"``  ReLabel's path: densify + ``torchvision.ops.roi_align`` (any device);
  ``"cpu"``        C++ (``luab_fast._C.ops.label_pool``), sparse, OpenMP over the batch, bit-identical to
                   torchvision's CPU roi_align (§7) for every output_size and both box orders;
  ``"triton"``     one fused launch (luab_fast/kernels/label_pool.py): gathers by ``rows`` from the
                   GPU-resident store, pools sparsely, applies the softmax; deterministic, within ~1e-7
                   relative of torchvision (exact fixed-point class sums; |scores| < 2**22).
                   CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1`` (tests).

Store-resident maps: pass the whole store's ``scores``/``indices`` ([N, K, S, S], e.g.
``LabelMapStore.to("cuda").tensors()``) with ``rows`` [B] int64; the "triton" kernel reads the rows in place,
the other backends gather them first.

Inputs: scores float16/bfloat16/float32 (upcast to float32 exactly, as ReLabel's loader does with
``.float()``); indices int16/int32/int64 or a float tensor holding integers (ReLabel's release stores them
as floats and casts with ``.long()``); boxes float32 or float64 (cast to float32, as ReLabel's
``.cuda().float()``). Indices must lie in [0, num_classes) and be distinct along K at each cell (top-k
maps are; with duplicates ReLabel's ``scatter_`` would keep an unspecified one). |scores| < 2**22 on every
backend (the "triton" kernel's fixed-point range: a fallback changes speed, never the answer). ``B = 0``
returns an empty ``[0, C]`` result. Bad input raises ``ValueError`` naming the argument, what was expected
and what came: a result (or the reference's dense map) beyond 2**31 - 1 values is refused before anything
is allocated, and ``scores``/``boxes`` that require grad are refused (the op has no backward). Value checks
(ranges, finiteness) run inside the op so that ``torch.compile`` sees no data-dependent branch. On a GPU
they cost one device sync per call; ``validate=False`` skips them for maps already validated (a packed
LabelMapStore is), and the kernel then still never reads outside the inputs (bad rows/classes contribute
nothing).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .._ext import require_ext
from ..kernels.limits import MAX_ABS_SCORE  # the "triton" kernel's fixed-point range, enforced on every backend
from ._dispatch import pick_backend
from ._limits import as_int, check_size, size_pair

__all__ = ["label_pool", "label_pool_reference", "label_pool_targets"]

_BOX_ORDERS = ("xyxy", "legacy")
_SCORE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INDEX_DTYPES = (torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
                 torch.float64)


# ---------------------------------------------------------------------------------------------- checks
def check_values(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                 rows: Optional[torch.Tensor] = None, score_limit: Optional[float] = None,
                 extra: Sequence[tuple[str, torch.Tensor]] = ()) -> None:
    """Data-dependent checks (the C++ kernel makes the same ones itself), evaluated on the device and read
    back in one sync. With ``rows``, only the maps they select are checked (never the whole store).
    ``extra``: more (message, bad) pairs of the caller's, read back in the same sync."""
    n = scores.shape[0]
    problems: list[tuple[str, torch.Tensor, Optional[Callable[[], str]]]] = [(m, bad, None) for m, bad in extra]
    if rows is not None and rows.numel():
        out = (rows < 0) | (rows >= n)
        problems.append((f"rows must lie in [0, {n}) (the store's rows)", out.any(),
                         lambda: first_bad("rows", rows, out)))
        safe = rows.clamp(0, max(n - 1, 0))
        scores, indices = scores.index_select(0, safe), indices.index_select(0, safe)
    if scores.numel():
        problems.append(("scores must be finite, got NaN or inf", ~torch.isfinite(scores).all(), None))
        if score_limit is not None:
            big = scores.float().abs()
            problems.append((f"scores must satisfy |score| < {score_limit:.0f} (2**22: the GPU kernel's fixed-point "
                             "range, kept by every backend so that they agree)", (big >= score_limit).any(),
                             lambda: f", got |score| up to {float(big.max()):g}"))
    if indices.numel():
        if indices.is_floating_point():
            problems.append(("indices stored as floats must hold finite integers",
                             ~(torch.isfinite(indices) & (indices == indices.trunc())).all(), None))
        problems.append((f"indices must lie in [0, num_classes={num_classes})",
                         ((indices < 0) | (indices >= num_classes)).any(),
                         lambda: f", got values in [{int(indices.min())}, {int(indices.max())}]"))
        if indices.shape[1] > 1:
            srt = indices.sort(dim=1).values
            problems.append(("indices must be distinct along K at each cell", (srt[:, 1:] == srt[:, :-1]).any(),
                             None))
    if boxes.numel():
        ok = torch.isfinite(boxes).all() & (boxes >= 0).all() & (boxes <= 1).all()
        ok = ok & (boxes[:, 0] < boxes[:, 2]).all() & (boxes[:, 1] < boxes[:, 3]).all()
        problems.append(("boxes must be finite (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1",
                         ~ok, lambda: first_bad("boxes", boxes, ~box_ok(boxes))))
    if not problems:
        return
    failed = torch.stack([bad for _, bad, _ in problems]).tolist()  # the one device sync
    for (message, _, detail), bad in zip(problems, failed):
        if bad:
            raise ValueError(message + (detail() if detail else ""))  # details: more syncs, on the error path only


def box_ok(boxes: torch.Tensor) -> torch.Tensor:
    """[B] bool: the box is finite, inside [0, 1] and has x0 < x1, y0 < y1 (a NaN compares False)."""
    x0, y0, x1, y1 = boxes.unbind(1)
    return (x0 >= 0) & (y0 >= 0) & (x1 <= 1) & (y1 <= 1) & (x0 < x1) & (y0 < y1)


def first_bad(name: str, t: torch.Tensor, bad: torch.Tensor, lead: str = ", got ") -> str:
    """', got name[i] = value' for the first row flagged in ``bad`` (for an error message)."""
    i = int(bad.nonzero()[0, 0])
    v = t[i].tolist()
    return f"{lead}{name}[{i}] = {tuple(round(x, 6) for x in v) if isinstance(v, list) else v}"


# ---------------------------------------------------------------------------------------------- reference
def _roi_rows(boxes: torch.Tensor, size: int, legacy: bool) -> torch.Tensor:
    """[B, 5] roi_align rows (batch index, x1, y1, x2, y2) = fl(fl(box·S) − 0.5), as ReLabel builds them."""
    b = boxes[:, [1, 0, 3, 2]] if legacy else boxes
    return torch.cat([torch.arange(b.shape[0], device=b.device, dtype=b.dtype)[:, None], b * size - 0.5], 1)


def label_pool_reference(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                         out_h: int = 1, out_w: int = 1, legacy: bool = False) -> torch.Tensor:
    """ReLabel's path (relabel_batch_fn): densify [B, C, S, S] + torchvision roi_align → f32[B, C, oh, ow].

    Expects validated tensors (scores float32, integer indices, boxes float32).
    """
    from torchvision.ops import roi_align  # imported lazily: torchvision is only needed by the reference

    B, K, S, _ = scores.shape
    dense = torch.zeros(B, num_classes, S, S, dtype=torch.float32, device=scores.device)
    dense.scatter_(1, indices.long(), scores)  # absent classes stay exactly 0 (not -inf), as in ReLabel
    return roi_align(dense, _roi_rows(boxes, S, legacy), output_size=(out_h, out_w), spatial_scale=1.0,
                     sampling_ratio=-1, aligned=False)


def softmax_classes(pooled: torch.Tensor) -> torch.Tensor:
    """Softmax over C (dim 1) as ReLabel does on out.squeeze() ([B, C], last dim); torch's last-dim kernel is
    also the accurate one (a dim-1 softmax of [B, C, oh, ow] sums in plain float32 order: ~1e-5 relative)."""
    return pooled.movedim(1, -1).softmax(-1).movedim(-1, 1).contiguous()


def pool_gathered(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, rows: Optional[torch.Tensor],
                  num_classes: int, out_h: int, out_w: int, legacy: bool, softmax: bool, backend: str,
                  validate: bool = True, extra: Sequence[tuple[str, torch.Tensor]] = ()) -> torch.Tensor:
    """The op's body for every backend: f32[B, C, out_h, out_w] pooled scores (or their softmax over C).
    ``extra``: the caller's own (message, bad) value checks, read back with these (when ``validate``)."""
    scores, indices, boxes = scores.detach(), indices.detach(), boxes.detach().float().contiguous()
    if backend == "triton":
        from ..kernels.label_pool import label_pool_triton

        if validate:
            check_values(scores, indices, boxes, num_classes, rows, score_limit=MAX_ABS_SCORE, extra=extra)
        return label_pool_triton(scores.contiguous(), indices.contiguous(), boxes,
                                 None if rows is None else rows.detach().long().contiguous(),
                                 num_classes, out_h, out_w, legacy, softmax)
    if rows is not None:
        out = (rows < 0) | (rows >= scores.shape[0])
        if rows.numel() and bool(out.any()):
            raise ValueError(f"rows must lie in [0, {scores.shape[0]}) (the store's rows)"
                             + first_bad("rows", rows, out))
        scores, indices = scores.index_select(0, rows), indices.index_select(0, rows)
    if indices.is_floating_point():
        if indices.numel() and not bool((torch.isfinite(indices) & (indices == indices.trunc())).all()):
            raise ValueError("indices stored as floats must hold finite integers")
        indices = indices.long()  # ReLabel's .long()
    scores, indices = scores.float().contiguous(), indices.contiguous()
    if backend == "cpu":
        ext = require_ext("label_pool(backend='cpu')")
        if validate:
            _check_cpu(scores, extra)
        # float32 [B, C, oh, ow]; the kernel validates every value and raises ValueError naming it
        return torch.from_numpy(ext.ops.label_pool(scores.numpy(), indices.numpy(), boxes.numpy(), num_classes,
                                                   out_h, out_w, legacy, softmax))
    B, _, S, _ = scores.shape
    check_size("num_classes (C)", (B, num_classes, S, S), "dense [B, C, S, S] float32 (backend='reference' densifies "
               "the maps, as ReLabel does)", "use backend='cpu' (or 'triton' on a GPU), or a smaller batch")
    # the maps' checks run whatever ``validate`` says (bad classes would crash the scatter); the caller's don't
    check_values(scores, indices, boxes, num_classes, score_limit=MAX_ABS_SCORE, extra=extra if validate else ())
    out = label_pool_reference(scores, indices, boxes, num_classes, out_h, out_w, legacy)
    return softmax_classes(out) if softmax else out


def _check_cpu(scores: torch.Tensor, extra: Sequence[tuple[str, torch.Tensor]]) -> None:
    """The "cpu" backend's Python-side checks (CPU tensors: no device sync): the caller's, and the score range
    (the kernel checks every other value; the range keeps every backend's answer the same)."""
    for message, bad in extra:
        if bool(bad):
            raise ValueError(message)
    if scores.numel():
        big = float(scores.abs().max())
        if big >= MAX_ABS_SCORE:  # NaN compares False here: the kernel names it
            raise ValueError(f"scores must satisfy |score| < {MAX_ABS_SCORE:.0f} (2**22: the GPU kernel's "
                             f"fixed-point range, kept by every backend so that they agree), got |score| up to {big:g}")


# ------------------------------------------------------------------------------------- torch.library op
@torch.library.custom_op("luab_fast::label_pool", mutates_args=())
def _label_pool_op(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, rows: Optional[torch.Tensor],
                   num_classes: int, out_h: int, out_w: int, legacy: bool, softmax: bool, backend: str,
                   validate: bool) -> torch.Tensor:
    """f32[B, C, out_h, out_w] pooled scores, or ReLabel's targets (their softmax over C) when ``softmax``;
    the backend was resolved by ``label_pool``."""
    return pool_gathered(scores, indices, boxes, rows, num_classes, out_h, out_w, legacy, softmax, backend, validate)


@_label_pool_op.register_fake
def _(scores, indices, boxes, rows, num_classes, out_h, out_w, legacy, softmax, backend, validate):
    return scores.new_empty((boxes.shape[0], num_classes, out_h, out_w), dtype=torch.float32)


# ------------------------------------------------------------------------------------------- public API
def output_hw(output_size: int | Sequence[int]) -> tuple[int, int]:
    return size_pair("output_size", output_size)


def check_static(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                 box_order: str, rows: Optional[torch.Tensor] = None) -> int:
    """Shapes, dtypes, devices and options (no data read): cheap, and visible to torch.compile. Returns
    ``num_classes`` as a Python int."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 4 or scores.shape[2] != scores.shape[3]:
        raise ValueError(f"scores must be Tensor[B, K, S, S], got shape {tuple(getattr(scores, 'shape', ()))}")
    if scores.dtype not in _SCORE_DTYPES:
        raise ValueError(f"scores must be float16, bfloat16 or float32, got {scores.dtype}")
    N, K, S, _ = scores.shape
    if K < 1 or S < 1:
        raise ValueError(f"scores must have K >= 1 and S >= 1, got shape {tuple(scores.shape)}")
    if not isinstance(indices, torch.Tensor) or indices.shape != scores.shape:
        raise ValueError(f"indices must have the shape of scores {tuple(scores.shape)}, "
                         f"got {tuple(getattr(indices, 'shape', ()))}")
    if indices.dtype not in _INDEX_DTYPES:
        raise ValueError(f"indices must be int16, int32, int64 or a float tensor holding integers, got {indices.dtype}")
    if rows is not None:
        if not isinstance(rows, torch.Tensor) or rows.dim() != 1:
            raise ValueError(f"rows must be Tensor[B] of store rows, got shape {tuple(getattr(rows, 'shape', ()))}")
        if rows.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"rows must be int64 (or int32), got {rows.dtype}")
        if rows.device != scores.device:
            raise ValueError(f"rows must be on the device of scores ({scores.device}), got {rows.device}")
    B = N if rows is None else rows.shape[0]
    if not isinstance(boxes, torch.Tensor) or boxes.shape != (B, 4):
        raise ValueError(f"boxes must be Tensor[B={B}, 4], got shape {tuple(getattr(boxes, 'shape', ()))}")
    if boxes.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"boxes must be float32 (or float64, cast to float32), got {boxes.dtype}")
    if not (indices.device == scores.device == boxes.device):
        raise ValueError(f"scores, indices and boxes must be on one device, got {scores.device}, "
                         f"{indices.device}, {boxes.device}")
    num_classes = as_int("num_classes", num_classes)  # the kernels hold a class in int32
    if box_order not in _BOX_ORDERS:
        raise ValueError(f"box_order must be one of {_BOX_ORDERS}, got {box_order!r}")
    return num_classes


def label_pool(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
               output_size: int | Sequence[int] = 1, box_order: str = "xyxy", backend: Optional[str] = None,
               *, rows: Optional[torch.Tensor] = None, validate: bool = True) -> torch.Tensor:
    """Pools top-k label maps over crop boxes (ReLabel's LabelPooling, before the softmax).

    Args:
        scores: Tensor[B, K, S, S] float (teacher logits, top-k rank along K); or the store's [N, K, S, S]
            with ``rows``.
        indices: the class of each score, same shape (int16/32/64, or floats holding integers).
        boxes: Tensor[B, 4] float32 (x0, y0, x1, y1) normalised to the map's image, 0 <= x0 < x1 <= 1.
        num_classes: C.
        output_size: 1 (→ [B, C]) or an int / (oh, ow) pair (→ [B, C, oh, ow], token-labelling style).
        box_order: "xyxy" (correct for rows-first maps) or "legacy" (the official code's swapped axes).
        backend: None (dispatch), "reference", "cpu" or "triton".
        rows: Tensor[B] int64, the maps to pool from a store-sized ``scores``/``indices`` (gathered in the
            kernel by "triton").
        validate: check the values (one device sync on a GPU); False for already-validated store maps.

    Returns:
        float32 Tensor[B, C] (or [B, C, oh, ow]); classes never sampled are exactly 0. B = 0 gives [0, C].
    """
    return _run(scores, indices, boxes, num_classes, output_size, box_order, backend, rows, validate, softmax=False)


def _run(scores, indices, boxes, num_classes, output_size, box_order, backend, rows, validate,
         softmax: bool) -> torch.Tensor:
    num_classes = check_static(scores, indices, boxes, num_classes, box_order, rows)
    oh, ow = output_hw(output_size)
    B = max(boxes.shape[0], 1)  # an absurd size is an error even for an empty batch
    check_size("num_classes", (B, num_classes), "[B, C] float32 result", "is it the class count?")
    check_size("output_size", (B, num_classes, oh, ow), "[B, C, oh, ow] float32 result",
               "choose a smaller output_size (or batch)")
    if torch.is_grad_enabled():
        for name, t in (("scores", scores), ("boxes", boxes)):
            if t.requires_grad:  # the op has no backward: fail here, not at loss.backward()
                raise ValueError(f"{name} must not require grad: label pooling has no gradient (label maps and "
                                 f"crop boxes are data); pass {name}.detach()")
    out = _label_pool_op(scores, indices, boxes, rows, num_classes, oh, ow, box_order == "legacy", softmax,
                         pick_backend(scores.device, backend), bool(validate))
    return out.flatten(1) if (oh, ow) == (1, 1) else out


def label_pool_targets(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                       output_size: int | Sequence[int] = 1, box_order: str = "xyxy",
                       backend: Optional[str] = None, *, rows: Optional[torch.Tensor] = None,
                       validate: bool = True) -> torch.Tensor:
    """ReLabel's soft targets: softmax over all C classes of ``label_pool(...)`` (dim 1).

    As in ReLabel (../shared/docs/label-pooling.md §2.3, §4 "Quirk", §7 step 2) the classes absent from the pooled
    vector enter the softmax as exact zeros, not −inf: each gets exp(0 − m)/Z, so a modest top logit
    leaves much of the mass spread over the ~995 absent classes. float32 [B, C] (or [B, C, oh, ow]).
    The "cpu" and "triton" backends fuse the softmax into the kernel (§6 closed form / online softmax);
    they match ``torch.softmax`` of the reference pooled scores within 1e-6 relative, not bitwise (§7
    step 2).
    """
    return _run(scores, indices, boxes, num_classes, output_size, box_order, backend, rows, validate, softmax=True)
