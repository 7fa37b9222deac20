"""relabel_cross_entropy (luab_fast/ops/relabel_cross_entropy.py, luab_fast/kernels/relabel_cross_entropy.py):
equal to soft-target cross-entropy on the reference targets, gradients included; float64 gradcheck of
every backend; the Triton kernel runs under TRITON_INTERPRET=1 on the CPU (compiled on a GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import backend_device
from fixtures.label_maps import make_maps, rrc_boxes

from luab_fast.ops import label_pool_targets, relabel_cross_entropy
from luab_fast.ops.relabel_cross_entropy import _relabel_ce_op


def inputs(B: int, C: int, seed: int, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    scores, indices = make_maps(B, 5, 15, C, gen)
    boxes = rrc_boxes(B, gen)
    logits = (torch.randn(B, C, generator=gen) * 3).to(dtype)
    return logits.to(device), scores.to(device), indices.to(device), boxes.to(device)


@pytest.mark.parametrize("box_order", ["xyxy", "legacy"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_soft_target_cross_entropy(backend, box_order, reduction):
    dev = backend_device(backend)
    logits, scores, indices, boxes = inputs(7, 120, 1, device=dev)
    x = logits.clone().requires_grad_(True)
    loss = relabel_cross_entropy(x, scores, indices, boxes, box_order, reduction, backend=backend)
    (loss.sum() if reduction == "none" else loss).backward()

    t = label_pool_targets(scores.cpu(), indices.cpu(), boxes.cpu(), 120, box_order=box_order, backend="reference")
    x_ref = logits.detach().cpu().clone().requires_grad_(True)
    want = F.cross_entropy(x_ref, t, reduction=reduction)
    (want.sum() if reduction == "none" else want).backward()
    assert loss.dtype == torch.float32 and loss.shape == want.shape
    torch.testing.assert_close(loss.detach().cpu(), want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.cpu(), x_ref.grad, rtol=1e-5, atol=1e-6)


def test_gradcheck_float64(backend):
    dev = backend_device(backend)
    logits, scores, indices, boxes = inputs(3, 13, 2, torch.float64, dev)
    x = logits.clone().requires_grad_(True)
    # the interpreted kernel costs ~0.1 s a call: one random direction (fast mode) instead of all 39 inputs
    fast = backend == "triton" and dev == "cpu"
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda v: relabel_cross_entropy(v, scores, indices, boxes, "legacy", reduction, backend=backend), (x,),
            fast_mode=fast)


def test_low_precision_logits_and_store_rows(backend):
    dev = backend_device(backend)
    logits, scores, indices, boxes = inputs(6, 90, 3, device=dev)
    rows = torch.tensor([3, 1, 1, 0, 5, 2], device=dev)
    store_s, store_i = scores.half(), indices.short()
    want = relabel_cross_entropy(logits.float(), store_s.float()[rows], indices[rows], boxes, backend="reference")
    for dtype in (torch.bfloat16, torch.float16):
        x = logits.to(dtype).requires_grad_(True)
        loss = relabel_cross_entropy(x, store_s, store_i, boxes, rows=rows, backend=backend)
        loss.backward()
        assert loss.dtype == torch.float32 and x.grad.dtype == dtype
        ref = relabel_cross_entropy(x.detach().float(), store_s.float()[rows], indices[rows], boxes,
                                    backend="reference")
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)  # same logits: only the target path differs
        torch.testing.assert_close(loss, want, rtol=3e-2, atol=3e-2)  # rounding the logits to 8/11 bits


def test_no_grad_and_empty_batch(backend):
    dev = backend_device(backend)
    logits, scores, indices, boxes = inputs(3, 20, 4, device=dev)
    with torch.no_grad():
        a = relabel_cross_entropy(logits.requires_grad_(True), scores, indices, boxes, backend=backend)
    b = relabel_cross_entropy(logits.detach(), scores, indices, boxes, backend=backend)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    logits = logits.detach()
    empty = relabel_cross_entropy(logits[:0], scores[:0], indices[:0], boxes[:0], reduction="none", backend=backend)
    assert empty.shape == (0,)
    assert float(relabel_cross_entropy(logits[:0], scores[:0], indices[:0], boxes[:0], reduction="sum",
                                       backend=backend)) == 0.0


def test_bad_input_names_the_argument():
    logits, scores, indices, boxes = inputs(3, 20, 5)
    cases = [("logits", dict(logits=logits[0])), ("logits", dict(logits=logits.long())),
             ("logits", dict(logits=logits[:2])), ("reduction", dict(reduction="avg")),
             ("indices", dict(logits=logits[:, :10])),  # classes beyond the logits' C
             ("boxes", dict(boxes=boxes[:, :2])), ("backend", dict(backend="gpu")),
             ("rows", dict(rows=torch.tensor([0.5, 1.0, 2.0])))]
    good = dict(logits=logits, scores=scores, indices=indices, boxes=boxes)
    relabel_cross_entropy(**good)
    for name, change in cases:
        with pytest.raises(ValueError, match=name):
            relabel_cross_entropy(**{**good, **change})


def test_opcheck(backend):
    dev = backend_device(backend)
    logits, scores, indices, boxes = inputs(3, 25, 6, device=dev)
    x = logits.clone().requires_grad_(True)
    torch.library.opcheck(_relabel_ce_op, (x, scores, indices, boxes, None, False, backend, True, True))
    torch.library.opcheck(_relabel_ce_op, (logits, scores, indices.short(), boxes, torch.tensor([2, 0, 1], device=dev),
                                           True, backend, True, False))


def test_torch_compile_fullgraph_training_step():
    logits, scores, indices, boxes = inputs(4, 50, 7)
    head = torch.nn.Linear(50, 50)

    def step(x):
        return relabel_cross_entropy(head(x), scores, indices, boxes, "legacy")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(logits)
    loss.backward()
    got = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    step(logits).backward()
    for g, w in zip(got, [p.grad for p in head.parameters()]):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)
