"""Label pooling's core, shared by ``label_pool``/``label_pool_targets`` (ops/label_pool.py) and
``relabel_cross_entropy``: the label maps' checks, ReLabel's reference path (``label_pool_reference``, the
"reference" backend and the tests' oracle) and the body every backend runs (``pool_label_maps``).

The conventions (box order, dtypes, value rules) are documented in ops/label_pool.py.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .._ext import require_ext
from ..kernels.limits import MAX_ABS_SCORE  # the "triton" kernel's fixed-point range, enforced on every backend
from ._checks import Problem, as_int, box_problem, check_size, raise_first, rows_problem

BOX_ORDERS = ("xyxy", "legacy")
SCORE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INDEX_DTYPES = (torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32, torch.float64)
SCORE_RANGE = (f"scores must satisfy |score| < {MAX_ABS_SCORE:.0f} (2**22: the GPU kernel's fixed-point range, "
               "kept by every backend so that they agree)")


# ---------------------------------------------------------------------------------------------- checks
def check_static(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                 box_order: str, rows: Optional[torch.Tensor] = None) -> int:
    """Shapes, dtypes, devices and options (no data read): cheap, and visible to torch.compile. Returns
    ``num_classes`` as a Python int."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 4 or scores.shape[2] != scores.shape[3]:
        raise ValueError(f"scores must be Tensor[B, K, S, S], got shape {tuple(getattr(scores, 'shape', ()))}")
    if scores.dtype not in SCORE_DTYPES:
        raise ValueError(f"scores must be float16, bfloat16 or float32, got {scores.dtype}")
    N, K, S, _ = scores.shape
    if K < 1 or S < 1:
        raise ValueError(f"scores must have K >= 1 and S >= 1, got shape {tuple(scores.shape)}")
    if not isinstance(indices, torch.Tensor) or indices.shape != scores.shape:
        raise ValueError(f"indices must have the shape of scores {tuple(scores.shape)}, "
                         f"got {tuple(getattr(indices, 'shape', ()))}")
    if indices.dtype not in INDEX_DTYPES:
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
    if box_order not in BOX_ORDERS:
        raise ValueError(f"box_order must be one of {BOX_ORDERS}, got {box_order!r}")
    return num_classes


def _float_index_problem(indices: torch.Tensor) -> Problem:
    return Problem("indices stored as floats must hold finite integers",
                   ~(torch.isfinite(indices) & (indices == indices.trunc())).all())


def value_problems(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                   rows: Optional[torch.Tensor] = None) -> list[Problem]:
    """The maps' data-dependent checks (the C++ kernel makes the same ones itself), for ``raise_first``. With
    ``rows``, only the maps they select are checked (never the whole store)."""
    problems: list[Problem] = []
    if rows is not None and rows.numel():
        n = scores.shape[0]
        problems.append(rows_problem(rows, n, "the store's rows"))
        safe = rows.clamp(0, max(n - 1, 0))
        scores, indices = scores.index_select(0, safe), indices.index_select(0, safe)
    if scores.numel():
        problems.append(Problem("scores must be finite, got NaN or inf", ~torch.isfinite(scores).all()))
        big = scores.float().abs()
        problems.append(Problem(SCORE_RANGE, (big >= MAX_ABS_SCORE).any(),
                                lambda: f", got |score| up to {float(big.max()):g}"))
    if indices.numel():
        if indices.is_floating_point():
            problems.append(_float_index_problem(indices))
        problems.append(Problem(f"indices must lie in [0, num_classes={num_classes})",
                                ((indices < 0) | (indices >= num_classes)).any(),
                                lambda: f", got values in [{int(indices.min())}, {int(indices.max())}]"))
        if indices.shape[1] > 1:
            srt = indices.sort(dim=1).values
            problems.append(Problem("indices must be distinct along K at each cell",
                                    (srt[:, 1:] == srt[:, :-1]).any()))
    if boxes.numel():
        problems.append(box_problem(boxes))
    return problems


def _cpu_problems(scores: torch.Tensor) -> list[Problem]:
    """The "cpu" backend's Python-side check (the kernel checks every other value): the score range, which
    keeps every backend's answer the same. A NaN compares False here: the kernel names it."""
    if not scores.numel():
        return []
    big = scores.abs().max()
    return [Problem(SCORE_RANGE, big >= MAX_ABS_SCORE, lambda: f", got |score| up to {float(big):g}")]


# ---------------------------------------------------------------------------------------------- reference
def roi_rows(boxes: torch.Tensor, size: int, legacy: bool) -> torch.Tensor:
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
    return roi_align(dense, roi_rows(boxes, S, legacy), output_size=(out_h, out_w), spatial_scale=1.0,
                     sampling_ratio=-1, aligned=False)


def softmax_classes(pooled: torch.Tensor) -> torch.Tensor:
    """Softmax over C (dim 1) as ReLabel does on out.squeeze() ([B, C], last dim); torch's last-dim kernel is
    also the accurate one (a dim-1 softmax of [B, C, oh, ow] sums in plain float32 order: ~1e-5 relative)."""
    return pooled.movedim(1, -1).softmax(-1).movedim(-1, 1).contiguous()


# ---------------------------------------------------------------------------------------------- the body
def pool_label_maps(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, rows: Optional[torch.Tensor],
                    num_classes: int, out_h: int, out_w: int, legacy: bool, softmax: bool, backend: str,
                    validate: bool = True, extra: Sequence[Problem] = ()) -> torch.Tensor:
    """The op's body for every backend: f32[B, C, out_h, out_w] pooled scores (or their softmax over C).
    ``extra``: the caller's own value checks, read back before these, in the same sync (when ``validate``)."""
    scores, indices, boxes = scores.detach(), indices.detach(), boxes.detach().float().contiguous()
    if backend == "triton":
        from ..kernels.label_pool import label_pool_triton

        if validate:
            raise_first([*extra, *value_problems(scores, indices, boxes, num_classes, rows)])
        return label_pool_triton(scores.contiguous(), indices.contiguous(), boxes,
                                 None if rows is None else rows.detach().long().contiguous(),
                                 num_classes, out_h, out_w, legacy, softmax)
    if rows is not None:
        if rows.numel():
            raise_first([rows_problem(rows, scores.shape[0], "the store's rows")])
        scores, indices = scores.index_select(0, rows), indices.index_select(0, rows)
    if indices.is_floating_point():
        if indices.numel():
            raise_first([_float_index_problem(indices)])
        indices = indices.long()  # ReLabel's .long()
    scores, indices = scores.float().contiguous(), indices.contiguous()
    if backend == "cpu":
        ext = require_ext("label_pool(backend='cpu')")
        if validate:
            raise_first([*extra, *_cpu_problems(scores)])  # (CPU tensors: no device sync)
        # float32 [B, C, oh, ow]; the kernel validates every value and raises ValueError naming it
        return torch.from_numpy(ext.ops.label_pool(scores.numpy(), indices.numpy(), boxes.numpy(), num_classes,
                                                   out_h, out_w, legacy, softmax))
    B, _, S, _ = scores.shape
    check_size("num_classes (C)", (B, num_classes, S, S), "dense [B, C, S, S] float32 (backend='reference' densifies "
               "the maps, as ReLabel does)", "use backend='cpu' (or 'triton' on a GPU), or a smaller batch")
    # the maps' checks run whatever ``validate`` says (bad classes would crash the scatter); the caller's don't
    raise_first([*(extra if validate else ()), *value_problems(scores, indices, boxes, num_classes)])
    out = label_pool_reference(scores, indices, boxes, num_classes, out_h, out_w, legacy)
    return softmax_classes(out) if softmax else out
