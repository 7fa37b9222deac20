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
  ``"reference"``  ``label_pool_reference``, ReLabel's path: densify + ``torchvision.ops.roi_align`` (any
                   device);
  ``"cpu"``        C++ (``luab_fast._C.ops.label_pool``), sparse, OpenMP over the batch, bit-identical to
                   torchvision's CPU roi_align (§7) for every output_size and both box orders;
  ``"triton"``     one fused launch (luab_fast/kernels/label_pool.py): gathers by ``rows`` from the
                   GPU-resident store, pools sparsely, applies the softmax; deterministic, within ~1e-7
                   relative of torchvision (exact fixed-point class sums; |scores| < 2**22).
                   CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1`` (tests).

The maps' checks, the reference and the body every backend runs live in ``ops/_label_pool_core.py``,
shared with ``relabel_cross_entropy``; this file is the op and its public functions.

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

from typing import Optional, Sequence

import torch

from ._checks import output_hw
from ._dispatch import pick_backend
from ._label_pool_core import check_static, label_pool_reference, pool_label_maps
from ._label_pool_core import softmax_classes as softmax_classes  # re-exported: the tests import it from here

__all__ = ["label_pool", "label_pool_reference", "label_pool_targets"]


# ------------------------------------------------------------------------------------- torch.library op
@torch.library.custom_op("luab_fast::label_pool", mutates_args=())
def _label_pool_op(scores: torch.Tensor, indices: torch.Tensor, boxes: torch.Tensor, rows: Optional[torch.Tensor],
                   num_classes: int, out_h: int, out_w: int, legacy: bool, softmax: bool, backend: str,
                   validate: bool) -> torch.Tensor:
    """f32[B, C, out_h, out_w] pooled scores, or ReLabel's targets (their softmax over C) when ``softmax``;
    the backend was resolved by ``label_pool``."""
    return pool_label_maps(scores, indices, boxes, rows, num_classes, out_h, out_w, legacy, softmax, backend,
                           validate)


@_label_pool_op.register_fake
def _(scores, indices, boxes, rows, num_classes, out_h, out_w, legacy, softmax, backend, validate):
    return scores.new_empty((boxes.shape[0], num_classes, out_h, out_w), dtype=torch.float32)


# ------------------------------------------------------------------------------------------- public API
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
    oh, ow = output_hw("output_size", output_size, boxes.shape[0], "[B, C, oh, ow] float32 result", num_classes)
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
