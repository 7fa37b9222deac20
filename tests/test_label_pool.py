"""label_pool / label_pool_targets (luab_fast/ops/label_pool.py, csrc/ops/label_pool.cpp).

The "cpu" backend must equal torchvision's CPU roi_align on the densified map bit for bit
(../shared/docs/label-pooling.md §7); the targets follow §7 step 2 within a tolerance (softmax order is torch's).
"""

from __future__ import annotations

import zlib

import pytest
import torch
from conftest import backend_mark, backends
from fixtures.label_maps import SHAPES, make_maps, random_boxes, rrc_boxes

from luab_fast._ext import HAS_EXT
from luab_fast.kernels import triton_runs_on
from luab_fast.ops import label_pool, label_pool_targets
from luab_fast.ops.label_pool import _label_pool_op

TARGET_RTOL = 1e-6  # §7 step 2: softmax reduction order is implementation-defined
CPU_TENSORS = backends(device="cpu")  # these tests keep their tensors on the CPU ("triton": the interpreter)
needs_ext = backend_mark("cpu")


def assert_bitwise(got: torch.Tensor, want: torch.Tensor) -> None:
    if torch.equal(got, want):
        return
    diff = (got - want).abs()
    bad = (got != want).nonzero()[:5].tolist()
    raise AssertionError(f"not bit-identical: max {diff.max():.3g}, mean {diff.mean():.3g}, first at {bad}")


@needs_ext
@pytest.mark.parametrize("K,S,C", SHAPES)
@pytest.mark.parametrize("kind", ["rrc", "subcell", "border", "whole", "any"])
@pytest.mark.parametrize("box_order", ["xyxy", "legacy"])
def test_cpu_bitwise_equals_torchvision(K, S, C, kind, box_order):
    gen = torch.Generator().manual_seed(zlib.crc32(repr((K, S, C, kind, box_order)).encode()))
    B = 23
    scores, indices = make_maps(B, K, S, C, gen)
    boxes = random_boxes(B, S, kind, gen)
    want = label_pool(scores, indices, boxes, C, box_order=box_order, backend="reference")
    got = label_pool(scores, indices, boxes, C, box_order=box_order, backend="cpu")
    assert got.shape == (B, C) and got.dtype == torch.float32
    assert_bitwise(got, want)


@needs_ext
@pytest.mark.parametrize("output_size", [(2, 3), 7, (14, 14)])
@pytest.mark.parametrize("box_order", ["xyxy", "legacy"])
def test_cpu_bitwise_dense_outputs(output_size, box_order):
    gen = torch.Generator().manual_seed(7)
    scores, indices = make_maps(9, 5, 15, 50, gen)
    boxes = torch.cat([rrc_boxes(5, gen), random_boxes(4, 15, "subcell", gen)])
    want = label_pool(scores, indices, boxes, 50, output_size, box_order, backend="reference")
    got = label_pool(scores, indices, boxes, 50, output_size, box_order, backend="cpu")
    assert got.dim() == 4
    assert_bitwise(got, want)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64, torch.float32, torch.float64])
def test_index_dtypes_and_layouts(dtype):
    gen = torch.Generator().manual_seed(3)
    scores, indices = make_maps(6, 5, 15, 1000, gen)
    boxes = rrc_boxes(6, gen)
    want = label_pool(scores, indices, boxes, 1000, backend="reference")
    idx = indices.to(dtype)
    # non-contiguous views of the same values
    sc_nc = scores.transpose(2, 3).contiguous().transpose(2, 3)
    bx_nc = torch.cat([boxes, boxes], 1)[:, :4]
    for backend in ("reference", "cpu"):
        assert_bitwise(label_pool(scores, idx, boxes, 1000, backend=backend), want)
        assert_bitwise(label_pool(sc_nc, idx, bx_nc, 1000, backend=backend), want)
    # float16 scores are upcast exactly, as ReLabel's loader does
    half = scores.half()
    assert_bitwise(label_pool(half, idx, boxes, 1000, backend="cpu"),
                   label_pool(half.float(), indices, boxes, 1000, backend="reference"))


def test_legacy_pools_the_transposed_map():
    """§4: the official order reads (top, left, ..) as (x1, y1, ..): a crop of the left 40% pools the top 40%."""
    scores = torch.zeros(1, 2, 10, 10)
    indices = torch.stack([torch.zeros(10, 10), torch.ones(10, 10)])[None].long()
    scores[0, 0, :, :4] = 10.0  # class 0 scored only on the left 40% (rows first: [.., y, x])
    box = torch.tensor([[0.0, 0.0, 0.4, 1.0]])
    for backend in ["reference"] + (["cpu"] if HAS_EXT else []):
        right = label_pool(scores, indices, box, 2, box_order="xyxy", backend=backend)
        legacy = label_pool(scores, indices, box, 2, box_order="legacy", backend=backend)
        assert right[0, 0] == 10.0 and right[0, 1] == 0.0
        assert abs(float(legacy[0, 0]) - 4.0) < 1e-5  # pooled the top 40% rows: 4 of 10 columns scored
        gen = torch.Generator().manual_seed(1)
        sc, ix = make_maps(4, 5, 15, 30, gen)
        bx = rrc_boxes(4, gen)
        torch.testing.assert_close(label_pool(sc, ix, bx, 30, box_order="legacy", backend=backend),
                                   label_pool(sc.transpose(2, 3), ix.transpose(2, 3), bx, 30, backend=backend))


@pytest.mark.parametrize("backend", CPU_TENSORS)
def test_targets_follow_the_spec(backend):
    """§7 step 2 and §6: softmax over all C with absent classes at exactly 0 (not -inf)."""
    gen = torch.Generator().manual_seed(11)
    C = 1000
    scores, indices = make_maps(8, 5, 15, C, gen)
    boxes = rrc_boxes(8, gen)
    pooled = label_pool(scores, indices, boxes, C, backend=backend).double()
    t = label_pool_targets(scores, indices, boxes, C, backend=backend)
    present = pooled != 0
    m = torch.maximum(pooled.amax(1), torch.zeros(8, dtype=torch.float64))
    Z = (C - present.sum(1)) * torch.exp(-m) + torch.where(present, torch.exp(pooled - m[:, None]), 0).sum(1)
    want = torch.exp(pooled - m[:, None]) / Z[:, None]  # absent: exp(0 - m) / Z
    torch.testing.assert_close(t.double(), want, rtol=TARGET_RTOL, atol=1e-9)
    torch.testing.assert_close(t.sum(1), torch.ones(8), rtol=0, atol=1e-5)
    absent = t.masked_fill(present, float("nan"))
    assert (absent.nan_to_num(0).amax(1) > 0).all()  # absent classes share the mass equally, never 0
    assert t.dtype == torch.float32 and t.shape == (8, C)
    ref = label_pool_targets(scores, indices, boxes, C, (2, 3), "legacy", backend="reference")
    # "cpu" pools bit-identically, so only the softmax differs; "triton" pools a few float32 ulps away from
    # torchvision (tests/test_label_pool_triton.py), so its targets are within 1e-6 of the targets' scale
    atol = 1e-9 if backend != "triton" else TARGET_RTOL * float(ref.max())
    torch.testing.assert_close(label_pool_targets(scores, indices, boxes, C, (2, 3), "legacy", backend=backend), ref,
                               rtol=TARGET_RTOL, atol=atol)


@pytest.mark.parametrize("backend", CPU_TENSORS)
def test_empty_batch(backend):
    scores, indices = torch.zeros(0, 5, 15, 15), torch.zeros(0, 5, 15, 15, dtype=torch.int16)
    out = label_pool(scores, indices, torch.zeros(0, 4), 1000, backend=backend)
    assert out.shape == (0, 1000) and out.dtype == torch.float32
    assert label_pool_targets(scores, indices, torch.zeros(0, 4), 1000, 2, backend=backend).shape == (0, 1000, 2, 2)


def _bad_cases():
    s = torch.randn(2, 3, 4, 4)
    i = torch.stack([torch.full((4, 4), k) for k in range(3)])[None].repeat(2, 1, 1, 1)
    b = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]])
    nan, inf = s.clone(), s.clone()
    nan[1, 2, 3, 0] = float("nan")
    inf[0, 0, 0, 0] = float("-inf")
    dup, neg, big = i.clone(), i.clone(), i.clone()
    dup[1, 1, 2, 2] = 0
    neg[0, 0, 1, 1] = -1
    big[1, 2, 0, 3] = 10
    return [
        ("scores", dict(scores=s[0])), ("scores", dict(scores=s[..., :3])), ("scores", dict(scores=s.double())),
        ("indices", dict(indices=i[:, :2])), ("indices", dict(indices=i.to(torch.uint8))),
        ("boxes", dict(boxes=b[:, :3])), ("boxes", dict(boxes=b[:1])), ("boxes", dict(boxes=b.long())),
        ("num_classes", dict(num_classes=0)), ("box_order", dict(box_order="yxyx")),
        ("output_size", dict(output_size=0)), ("backend", dict(backend="cuda")),
        ("scores", dict(scores=nan)), ("scores", dict(scores=inf)),
        ("indices", dict(indices=neg)), ("indices", dict(indices=big)), ("indices", dict(indices=dup)),
        ("indices", dict(indices=i.float() + 0.5)),
        ("boxes", dict(boxes=torch.tensor([[0.5, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0]]))),
        ("boxes", dict(boxes=torch.tensor([[0.1, 0.9, 0.5, 0.2], [0.0, 0.0, 1.0, 1.0]]))),
        ("boxes", dict(boxes=torch.tensor([[0.1, 0.2, 0.5, 0.9], [-0.1, 0.0, 1.0, 1.0]]))),
        ("boxes", dict(boxes=torch.tensor([[0.1, 0.2, 0.5, 1.2], [0.0, 0.0, 1.0, 1.0]]))),
        ("boxes", dict(boxes=torch.tensor([[0.1, 0.2, float("nan"), 0.9], [0.0, 0.0, 1.0, 1.0]]))),
    ], dict(scores=s, indices=i, boxes=b, num_classes=10)


@pytest.mark.parametrize("backend", CPU_TENSORS)
def test_bad_input_names_the_argument(backend):
    cases, good = _bad_cases()
    label_pool(**good, backend=backend)  # the unmodified inputs are fine
    for name, change in cases:
        kwargs = {**good, "backend": backend, **change}
        with pytest.raises(ValueError, match=name):
            label_pool(**kwargs)


@needs_ext
def test_compiled_kernel_checks_directly():
    from luab_fast import _C

    s, i, b = torch.randn(1, 2, 3, 3).numpy(), torch.zeros(1, 2, 3, 3, dtype=torch.int32).numpy(), \
        torch.tensor([[0.0, 0.0, 1.0, 1.0]]).numpy()
    for args, name in [((s, i, b, 5), "indices"), ((s.astype("float64"), i, b, 5), "scores"),
                       ((s, i, b[:, :2].copy(), 5), "boxes"), ((s, i.astype("uint16"), b, 5), "indices"),
                       ((s, i, b, 0), "num_classes")]:
        with pytest.raises(ValueError, match=name):
            _C.ops.label_pool(*args)


@pytest.mark.parametrize("backend", CPU_TENSORS)
def test_opcheck(backend):
    gen = torch.Generator().manual_seed(5)
    scores, indices = make_maps(3, 5, 15, 40, gen)
    boxes = rrc_boxes(3, gen)
    for oh, ow in [(1, 1), (2, 3)]:
        torch.library.opcheck(_label_pool_op, (scores, indices, boxes, None, 40, oh, ow, False, False, backend, True))
        torch.library.opcheck(_label_pool_op, (scores, indices.short(), boxes[:2], torch.tensor([2, 0]), 40, oh, ow,
                                               True, True, backend, True))


def test_torch_compile_fullgraph():
    gen = torch.Generator().manual_seed(9)
    scores, indices = make_maps(4, 5, 15, 100, gen)
    boxes = rrc_boxes(4, gen)

    def step(s, i, b):
        return label_pool_targets(s, i, b, 100, box_order="legacy") * 2.0

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(scores, indices, boxes), step(scores, indices, boxes), rtol=0, atol=0)


def test_dispatch_default_and_forced_triton():
    gen = torch.Generator().manual_seed(2)
    scores, indices = make_maps(3, 5, 15, 20, gen)
    boxes = rrc_boxes(3, gen)
    # CPU tensors dispatch to the C++ kernel when it is built (else the reference): bit-identical either way
    assert_bitwise(label_pool(scores, indices, boxes, 20), label_pool(scores, indices, boxes, 20, backend="reference"))
    if not triton_runs_on("cpu"):  # triton on CPU tensors needs the interpreter
        with pytest.raises(ValueError, match="backend='triton' needs CUDA"):
            label_pool(scores, indices, boxes, 20, backend="triton")
