"""LabelPooling (ReLabel, Yun et al., CVPR 2021, arXiv 2101.05022): top-k label maps pooled over crop boxes.

``label_pool(scores[B,K,S,S], indices[B,K,S,S], boxes[B,4], num_classes)`` → pooled scores ``[B, C]``
(``[B, C, oh, ow]`` for ``output_size != 1``), the RoIAlign of the dense map
``D[b, c, y, x] = scores[b, k, y, x] if indices[b, k, y, x] == c else 0`` over each box, with ReLabel's
arithmetic: roi_align rows ``fl(fl(box·S) − 0.5)``, ``spatial_scale=1, sampling_ratio=-1, aligned=False``
(docs/label-pooling.md §2.3 and §7).

Box order (docs/label-pooling.md §4): ``boxes`` are the project's float32 ``(x0, y0, x1, y1)`` normalised.
``box_order="xyxy"`` pools that region of a map stored rows first (``[.., y, x]``): correct.
``box_order="legacy"`` hands roi_align ``(y0, x0, y1, x1)`` like the official ReLabel code (its coords are
``(top, left, bottom, right)`` read as ``(x1, y1, x2, y2)``), i.e. it pools the transposed map; it
reproduces the official targets bit for bit.

Backends (one ``if`` in ``_pick_backend``; ``backend=`` forces one):
  ``"reference"``  ReLabel's path: densify + ``torchvision.ops.roi_align`` (any device);
  ``"cpu"``        C++ (``luab_fast._C.ops.label_pool``), sparse, OpenMP over the batch, bit-identical to
                   torchvision's CPU roi_align (§7) for every output_size and both box orders;
  ``"triton"``     not written yet (CUDA tensors use the reference meanwhile).

Inputs: scores float16/bfloat16/float32 (upcast to float32 exactly, as ReLabel's loader does with
``.float()``); indices int16/int32/int64 or a float tensor holding integers (ReLabel's release stores them
as floats and casts with ``.long()``); boxes float32 or float64 (cast to float32, as ReLabel's
``.cuda().float()``). Indices must lie in [0, num_classes) and be distinct along K at each cell (top-k
maps are; with duplicates ReLabel's ``scatter_`` would keep an unspecified one). ``B = 0`` returns an empty
``[0, C]`` result. Bad input raises ``ValueError`` naming the argument; value checks (ranges, finiteness)
run inside the op so that ``torch.compile`` sees no data-dependent branch.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .._ext import HAS_EXT, require_ext

__all__ = ["label_pool", "label_pool_reference", "label_pool_targets"]

_BACKENDS = ("reference", "cpu", "triton")
_BOX_ORDERS = ("xyxy", "legacy")
_SCORE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INDEX_DTYPES = (torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
                 torch.float64)


# ---------------------------------------------------------------------------------------------- reference
def _check_values(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int) -> None:
    """Data-dependent checks of the reference path (the C++ kernel makes the same ones)."""
    if scores.numel() and not bool(torch.isfinite(scores).all()):
        raise ValueError("scores must be finite, got NaN or inf")
    if indices.numel():
        if not bool(((indices >= 0) & (indices < num_classes)).all()):
            raise ValueError(f"indices must lie in [0, num_classes={num_classes}), got values in "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        srt = indices.sort(dim=1).values
        if srt.shape[1] > 1 and bool((srt[:, 1:] == srt[:, :-1]).any()):
            raise ValueError("indices must be distinct along K at each cell")
    if boxes.numel():
        ok = torch.isfinite(boxes).all() & (boxes >= 0).all() & (boxes <= 1).all()
        ok = ok & (boxes[:, 0] < boxes[:, 2]).all() & (boxes[:, 1] < boxes[:, 3]).all()
        if not bool(ok):
            raise ValueError("boxes must be finite (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")


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


def _prepare(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor):
    """float32 scores and boxes, integer indices, all contiguous (value checks are the backends' job)."""
    if indices.is_floating_point():
        if indices.numel() and not bool((torch.isfinite(indices) & (indices == indices.trunc())).all()):
            raise ValueError("indices stored as floats must hold finite integers")
        indices = indices.long()  # ReLabel's .long()
    return scores.float().contiguous(), indices.contiguous(), boxes.float().contiguous()


# ------------------------------------------------------------------------------------- torch.library op
@torch.library.custom_op("luab_fast::label_pool", mutates_args=())
def _label_pool_op(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                   out_h: int, out_w: int, legacy: bool, softmax: bool, backend: str) -> torch.Tensor:
    """f32[B, C, out_h, out_w] pooled scores, or ReLabel's targets (their softmax over C) when ``softmax``;
    the backend was resolved by ``label_pool``."""
    scores, indices, boxes = _prepare(scores.detach(), indices.detach(), boxes.detach())
    if backend == "cpu":
        ext = require_ext("label_pool(backend='cpu')")
        # float32 [B, C, oh, ow]; the kernel validates every value and raises ValueError naming it
        return torch.from_numpy(ext.ops.label_pool(scores.numpy(), indices.numpy(), boxes.numpy(), num_classes,
                                                   out_h, out_w, legacy, softmax))
    _check_values(scores, indices, boxes, num_classes)
    out = label_pool_reference(scores, indices, boxes, num_classes, out_h, out_w, legacy)
    if not softmax:
        return out
    # softmax over C as ReLabel does (on out.squeeze(): [B, C], last dim); torch's last-dim kernel is also
    # the accurate one (a dim-1 softmax of [B, C, oh, ow] sums in plain float32 order: ~1e-5 relative)
    return out.movedim(1, -1).softmax(-1).movedim(-1, 1).contiguous()


@_label_pool_op.register_fake
def _(scores, indices, boxes, num_classes, out_h, out_w, legacy, softmax, backend):
    return scores.new_empty((scores.shape[0], num_classes, out_h, out_w), dtype=torch.float32)


# ------------------------------------------------------------------------------------------- public API
def _pick_backend(scores: torch.Tensor, backend: str | None) -> str:
    if backend is not None:
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS} or None, got {backend!r}")
        if backend == "cpu" and scores.device.type != "cpu":
            raise ValueError(f"backend='cpu' needs CPU tensors, got device {scores.device}")
        if backend == "triton":
            raise NotImplementedError("label_pool backend='triton' is not written yet")
        return backend
    if scores.device.type == "cpu" and HAS_EXT:
        return "cpu"
    # CUDA + Triton will pick "triton" once luab_fast/kernels/label_pool.py exists; until then CUDA tensors
    # (and CPU without _C) use the reference. A fallback changes speed, never the answer.
    return "reference"


def _output_hw(output_size: int | Sequence[int]) -> tuple[int, int]:
    hw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in hw):
        raise ValueError(f"output_size must be an int >= 1 or a pair of them, got {output_size!r}")
    return hw  # type: ignore[return-value]


def _check_static(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                  box_order: str) -> None:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 4 or scores.shape[2] != scores.shape[3]:
        raise ValueError(f"scores must be Tensor[B, K, S, S], got shape {tuple(getattr(scores, 'shape', ()))}")
    if scores.dtype not in _SCORE_DTYPES:
        raise ValueError(f"scores must be float16, bfloat16 or float32, got {scores.dtype}")
    B, K, S, _ = scores.shape
    if K < 1 or S < 1:
        raise ValueError(f"scores must have K >= 1 and S >= 1, got shape {tuple(scores.shape)}")
    if not isinstance(indices, torch.Tensor) or indices.shape != scores.shape:
        raise ValueError(f"indices must have the shape of scores {tuple(scores.shape)}, "
                         f"got {tuple(getattr(indices, 'shape', ()))}")
    if indices.dtype not in _INDEX_DTYPES:
        raise ValueError(f"indices must be int16, int32, int64 or a float tensor holding integers, got {indices.dtype}")
    if not isinstance(boxes, torch.Tensor) or boxes.shape != (B, 4):
        raise ValueError(f"boxes must be Tensor[B={B}, 4], got shape {tuple(getattr(boxes, 'shape', ()))}")
    if boxes.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"boxes must be float32 (or float64, cast to float32), got {boxes.dtype}")
    if not (indices.device == scores.device == boxes.device):
        raise ValueError(f"scores, indices and boxes must be on one device, got {scores.device}, "
                         f"{indices.device}, {boxes.device}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if box_order not in _BOX_ORDERS:
        raise ValueError(f"box_order must be one of {_BOX_ORDERS}, got {box_order!r}")


def label_pool(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
               output_size: int | Sequence[int] = 1, box_order: str = "xyxy",
               backend: str | None = None) -> torch.Tensor:
    """Pools top-k label maps over crop boxes (ReLabel's LabelPooling, before the softmax).

    Args:
        scores: Tensor[B, K, S, S] float (teacher logits, top-k rank along K).
        indices: Tensor[B, K, S, S] class of each score (int16/32/64, or floats holding integers).
        boxes: Tensor[B, 4] float32 (x0, y0, x1, y1) normalised to the map's image, 0 <= x0 < x1 <= 1.
        num_classes: C.
        output_size: 1 (→ [B, C]) or an int / (oh, ow) pair (→ [B, C, oh, ow], token-labelling style).
        box_order: "xyxy" (correct for rows-first maps) or "legacy" (the official code's swapped axes).
        backend: None (dispatch), "reference", "cpu" or "triton".

    Returns:
        float32 Tensor[B, C] (or [B, C, oh, ow]); classes never sampled are exactly 0. B = 0 gives [0, C].
    """
    return _run(scores, indices, boxes, num_classes, output_size, box_order, backend, softmax=False)


def _run(scores, indices, boxes, num_classes, output_size, box_order, backend, softmax: bool) -> torch.Tensor:
    _check_static(scores, indices, boxes, num_classes, box_order)
    oh, ow = _output_hw(output_size)
    out = _label_pool_op(scores, indices, boxes, num_classes, oh, ow, box_order == "legacy", softmax,
                         _pick_backend(scores, backend))
    return out.flatten(1) if (oh, ow) == (1, 1) else out


def label_pool_targets(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, num_classes: int,
                       output_size: int | Sequence[int] = 1, box_order: str = "xyxy",
                       backend: str | None = None) -> torch.Tensor:
    """ReLabel's soft targets: softmax over all C classes of ``label_pool(...)`` (dim 1).

    As in ReLabel (docs/label-pooling.md §2.3, §4 "Quirk", §7 step 2) the classes absent from the pooled
    vector enter the softmax as exact zeros, not −inf: each gets exp(0 − m)/Z, so a modest top logit
    leaves much of the mass spread over the ~995 absent classes. float32 [B, C] (or [B, C, oh, ow]).
    The "cpu" backend fuses the softmax into the kernel (§6 closed form: one exp shared by the absent
    classes, sums in float64); it matches ``torch.softmax`` of the bit-identical pooled scores within 1e-6
    relative, not bitwise (§7 step 2).
    """
    return _run(scores, indices, boxes, num_classes, output_size, box_order, backend, softmax=True)
