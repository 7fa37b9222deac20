"""Hostile input at the public ops (issue 17): label_pool, label_pool_targets, relabel_cross_entropy,
luab_loss, rasterize_traces. Every bad argument is one ValueError naming it, what was expected and what
came; valid input in an odd layout (expanded, transposed, numpy ints) gives exactly the contiguous answer;
no backend returns NaN from finite valid input, and the backends agree on what is an error. Shapes are
tiny: the "triton" backend runs under TRITON_INTERPRET=1 here (tests/conftest.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from luab_fast._ext import HAS_EXT
from luab_fast.kernels import triton_runs_on
from luab_fast.ops import (
    label_pool,
    label_pool_reference,
    label_pool_targets,
    luab_loss,
    rasterize_traces,
    relabel_cross_entropy,
)

CPU = pytest.param("cpu", marks=pytest.mark.skipif(not HAS_EXT, reason="needs luab_fast._C"))
TRITON = pytest.param("triton", marks=pytest.mark.skipif(not triton_runs_on("cpu"), reason="needs TRITON_INTERPRET"))
BACKENDS = ["reference", CPU, TRITON]
FUZZ = settings(max_examples=100, deadline=None, derandomize=True,  # the same examples in every CI run
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def raises(fn, *fragments, exc=ValueError):
    """Asserts ``fn()`` raises ``exc`` whose message holds every fragment (case-insensitive)."""
    with pytest.raises(exc) as info:
        fn()
    low = str(info.value).lower()
    for frag in fragments:
        assert frag.lower() in low, f"{frag!r} not in {str(info.value)!r}"


# --------------------------------------------------------------------------------------------- inputs
def maps(B=2, K=2, S=4, C=5, seed=0):
    """Valid top-k label maps: scores, distinct indices along K, boxes inside the image."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, K, S, S, generator=g) * 3
    order = torch.rand(B, S, S, C, generator=g).argsort(-1)[..., :K]  # K distinct classes per cell
    boxes = torch.tensor([[0.1, 0.2, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0], [0.3, 0.1, 0.5, 0.7]])[:B].repeat(
        (B + 2) // 3, 1)[:B]
    return scores, order.permute(0, 3, 1, 2).contiguous(), boxes


def traces(seed=0):
    """A store of 2 samples (3 and 3 points), a batch of both, one flipped; clicks too."""
    g = torch.Generator().manual_seed(seed)
    return dict(points=torch.rand(6, 2, generator=g), times=torch.arange(6, dtype=torch.int64) * 300,
                offsets=torch.tensor([0, 3, 6]), rows=torch.tensor([0, 1]),
                boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.6, 0.9]]), flips=torch.tensor([False, True]),
                clicks=(torch.rand(2, 2, generator=g), torch.tensor([0, 1, 2])))


def loss_inputs(B=3, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(logits=torch.randn(B, C, generator=g) * 2, target=torch.randint(0, C, (B,), generator=g),
                point_pred=torch.rand(B, 2, generator=g), point_target=torch.rand(B, 2, generator=g),
                point_weight=torch.rand(B, generator=g), heat_pred=torch.randn(B, 2, 3, generator=g),
                heat_target=torch.rand(B, 2, 3, generator=g))


S_, I_, B_ = maps()
META = torch.empty(2, 4, device="meta")

# ------------------------------------------------------------------------------- label_pool: arguments
# (the change to the valid call, fragments of the message: argument, expectation, what came)
LABEL_POOL_ARGS = [
    (dict(indices=I_.bool()), ["indices must be int16, int32, int64", "torch.bool"]),
    (dict(scores=S_.double()), ["scores must be float16, bfloat16 or float32", "torch.float64"]),
    (dict(boxes=B_.long()), ["boxes must be float32", "torch.int64"]),
    (dict(boxes=B_[:1]), ["boxes must be Tensor[B=2, 4]", "(1, 4)"]),
    (dict(boxes=META), ["one device", "meta"]),
    (dict(output_size=10 ** 6), ["output_size", "at most 2147483647", "1e+13"]),
    (dict(output_size=2.0), ["output_size must be an integer", "2.0"]),
    (dict(output_size=(2, 0)), ["output_size must be an integer in [1,", "(2, 0)"]),
    (dict(num_classes=2 ** 63), ["num_classes must be an integer in [1, 2147483647]", "9223372036854775808"]),
    (dict(num_classes=True), ["num_classes must be an integer", "True"]),
    (dict(scores=S_.clone().requires_grad_()), ["scores must not require grad", "scores.detach()"]),
    (dict(rows=torch.tensor([0.0, 1.0])), ["rows must be int64", "torch.float32"]),
    (dict(box_order="yxyx"), ["box_order must be one of", "'yxyx'"]),
    (dict(backend="cuda"), ["backend must be one of", "'cuda'"]),
]


@pytest.mark.parametrize("change, fragments", LABEL_POOL_ARGS, ids=lambda v: str(v)[:40] if isinstance(v, dict) else "")
def test_label_pool_bad_arguments(change, fragments):
    raises(lambda: label_pool(**{**dict(scores=S_, indices=I_, boxes=B_, num_classes=5), **change}), *fragments)


# values are checked by each backend in its own way ("cpu": in C++): the same error everywhere
LABEL_POOL_VALUES = [
    ("box x1 < x0", dict(boxes=B_[:, [2, 1, 0, 3]]), ["boxes", "0 <= x0 < x1 <= 1", "0.9"]),
    ("row out of range", dict(rows=torch.tensor([0, 2])), ["rows", "[0, 2)"]),
    ("class >= C", dict(num_classes=3), ["indices must lie in [0, num_classes=3)", "got"]),
    ("NaN score", dict(scores=S_.clone().index_fill_(0, torch.tensor([1]), math.nan)), ["scores must be finite"]),
    ("score beyond 2**22", dict(scores=S_ * 1e37), ["|score| < 4194304", "2**22"]),
    ("repeated class", dict(indices=I_[:, :1].expand(-1, 2, -1, -1)), ["indices must be distinct along K"]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, change, fragments", LABEL_POOL_VALUES, ids=[c[0] for c in LABEL_POOL_VALUES])
def test_label_pool_bad_values_every_backend(backend, case, change, fragments):
    call = {**dict(scores=S_, indices=I_, boxes=B_, num_classes=5, backend=backend), **change}
    raises(lambda: label_pool(**call), *fragments)


@pytest.mark.parametrize("backend", BACKENDS)
def test_label_pool_odd_layouts_equal_the_contiguous_answer(backend):
    """Expanded (zero-stride), transposed, numpy-int and float-index inputs: the contiguous call's result,
    bit for bit, and ReLabel's own path (label_pool_reference) on the "reference" backend."""
    want = label_pool(S_, I_, B_, 5, backend=backend)
    if backend == "reference":
        assert torch.equal(want, label_pool_reference(S_, I_, B_, 5).flatten(1))
    # (change, whether it keeps the values of the valid call)
    odd = [(dict(scores=S_[:1].expand(2, -1, -1, -1), indices=I_[:1].expand(2, -1, -1, -1)), False),
           (dict(scores=S_.transpose(2, 3).contiguous().transpose(2, 3)), True), (dict(num_classes=np.int64(5)), True),
           (dict(indices=I_.float()), True), (dict(boxes=B_.double()), True)]
    for change, same in odd:
        call = {**dict(scores=S_, indices=I_, boxes=B_, num_classes=5, backend=backend), **change}
        got = label_pool(**call)
        dense = label_pool(**{k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in call.items()})
        assert torch.equal(got, dense) and (not same or torch.equal(got, want))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_and_no_points_are_empty_answers(backend):
    """B = 0 boxes, B = 0 crops and P = 0 points are valid: empty results, or all-zero maps reported empty."""
    assert label_pool_targets(S_[:0], I_[:0], B_[:0], 5, 2, backend=backend).shape == (0, 5, 2, 2)
    t = traces()
    heat = rasterize_traces(**{**t, "rows": t["rows"][:0], "boxes": t["boxes"][:0], "flips": t["flips"][:0]},
                            output_size=3, backend=backend)
    assert heat.shape == (0, 3, 3)
    heat, empty = rasterize_traces(**{**t, "points": t["points"][:0], "times": t["times"][:0],
                                      "offsets": torch.zeros(3, dtype=torch.int64), "clicks": None},
                                   output_size=3, backend=backend, return_empty=True)
    assert empty.tolist() == [True, True] and not heat.any()


# ------------------------------------------------------------------------------------ luab_loss
LUAB_ARGS = [
    ("soft target all -1", dict(target=torch.full((3, 5), -1.0)), ["target (soft) must hold probability rows",
                                                                    "minimum -1", "sum -5"]),
    ("soft target sums to 2", dict(target=torch.full((3, 5), 0.4)), ["probability rows", "sum 2"]),
    ("bf16 soft target off 1", dict(target=torch.full((3, 5), 0.21, dtype=torch.bfloat16)),
     ["probability rows", "torch.bfloat16"]),
    ("empty batch", dict(logits=torch.zeros(0, 5), target=torch.zeros(0, dtype=torch.int64), point_pred=None,
                         point_target=None, point_weight=None, heat_pred=None, heat_target=None),
     ["logits must hold at least one sample", "B=0"]),
    ("class out of range", dict(target=torch.tensor([0, 5, 1])), ["target must hold classes in [0, C=5)",
                                                                 "target[1] = 5"]),
    ("int32 classes", dict(target=torch.tensor([0, 1, 2], dtype=torch.int32)), ["target", "torch.int64",
                                                                               "torch.int32"]),
    ("bool logits", dict(logits=torch.ones(3, 5, dtype=torch.bool)), ["logits", "float32", "torch.bool"]),
    ("NaN logits", dict(logits=torch.full((3, 5), math.nan)), ["logits must be finite"]),
    ("batch mismatch", dict(point_pred=torch.zeros(2, 2)), ["point_pred must be Tensor[3, 2]", "(2, 2)"]),
    ("device mix", dict(point_weight=torch.ones(3, device="meta")), ["point_weight", "device", "meta"]),
    ("negative weight", dict(point_weight=torch.tensor([1.0, -1.0, 0.0])), ["point_weight must be >= 0"]),
    ("NaN label_smoothing", dict(label_smoothing=math.nan), ["label_smoothing must be a number in [0, 1]", "nan"]),
    ("inf lambda", dict(lambda_heat=math.inf), ["lambda_heat must be a finite number >= 0", "inf"]),
    ("backend cpu", dict(backend="cpu"), ["backend must be one of", "'cpu'"]),
]


# the value checks again on "triton" (the others run before the backend is chosen)
LUAB_CASES = [pytest.param("reference", *c, id=f"{c[0]}-reference") for c in LUAB_ARGS] + [
    pytest.param("triton", *c, id=f"{c[0]}-triton", marks=TRITON.marks) for c in LUAB_ARGS
    if c[0] in ("soft target all -1", "class out of range", "NaN logits")]


@pytest.mark.parametrize("backend, case, change, fragments", LUAB_CASES)
def test_luab_loss_bad_arguments(backend, case, change, fragments):
    raises(lambda: luab_loss(**{**loss_inputs(), "backend": backend, **change}), *fragments)


@pytest.mark.parametrize("backend", ["reference", TRITON])
def test_luab_loss_odd_layouts_equal_the_contiguous_answer(backend):
    """Zero-stride soft targets and heat maps, transposed predictions: the contiguous call's loss, bit for bit."""
    a = loss_inputs()
    odd = dict(target=torch.full((1, 5), 0.2).expand(3, 5), heat_target=a["heat_target"][:1].expand(3, 2, 3),
               point_pred=a["point_pred"].T.contiguous().T, logits=a["logits"].T.contiguous().T)
    got, _ = luab_loss(**{**a, **odd}, backend=backend)
    want, _ = luab_loss(**{**a, **{k: v.contiguous() for k, v in odd.items()}}, backend=backend)
    assert torch.equal(got, want) and torch.isfinite(got)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_luab_loss_accepts_probability_rows_rounded_to_their_dtype(dtype):
    """A softmax over 1000 classes rounded to fp16/bf16 sums to 1 only within the dtype's rounding: accepted,
    with the value F.cross_entropy gives."""
    a = loss_inputs(4, 1000)
    t = torch.randn(4, 1000).mul(3).softmax(1).to(dtype)
    loss, parts = luab_loss(a["logits"], t, backend="reference")
    torch.testing.assert_close(parts["cls"], F.cross_entropy(a["logits"], t.float()), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------- relabel_cross_entropy
LOGITS = torch.randn(2, 5)
RELABEL = [
    ("empty batch mean", dict(logits=LOGITS[:0], scores=S_[:0], indices=I_[:0], boxes=B_[:0]),
     ["logits must hold at least one sample for reduction='mean'", "B=0", "reduction='sum'"]),
    ("no classes", dict(logits=LOGITS[:, :0]), ["logits must be Tensor[B, C] with C >= 1", "(2, 0)"]),
    ("batch mismatch", dict(logits=torch.randn(3, 5)), ["logits must have one row per box", "boxes has 2", "got 3"]),
    ("int logits", dict(logits=LOGITS.long()), ["logits must be float16", "torch.int64"]),
    ("bad reduction", dict(reduction="avg"), ["reduction must be one of", "'avg'"]),
]


@pytest.mark.parametrize("case, change, fragments", RELABEL, ids=[c[0] for c in RELABEL])
def test_relabel_cross_entropy_bad_arguments(case, change, fragments):
    raises(lambda: relabel_cross_entropy(**{**dict(logits=LOGITS, scores=S_, indices=I_, boxes=B_), **change}),
           *fragments)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's NaN, wanted
@pytest.mark.parametrize("backend", BACKENDS)
def test_relabel_cross_entropy_non_finite_logits_every_backend(backend):
    """F.cross_entropy returns NaN for an inf logit; the op names it (and validate=False skips the check)."""
    bad = LOGITS.clone()
    bad[1, 3] = math.inf
    raises(lambda: relabel_cross_entropy(bad, S_, I_, B_, backend=backend), "logits must be finite")
    assert relabel_cross_entropy(bad, S_, I_, B_, backend=backend, validate=False).isnan()
    empty = relabel_cross_entropy(LOGITS[:0], S_[:0], I_[:0], B_[:0], reduction="sum", backend=backend)
    assert float(empty) == 0.0  # a sum of nothing is 0, as torch's


# ------------------------------------------------------------------------------------ rasterize_traces
T_ = traces()
RASTER_ARGS = [
    (dict(sigma=1e-30), ["sigma must be a number > 0 whose 2·sigma² is a normal float32", "1e-30"]),
    (dict(sigma=1e30), ["sigma", "1e19", "1e+30"]),
    (dict(sigma=True), ["sigma must be a finite number > 0", "True"]),
    (dict(sigma=math.nan), ["sigma must be a finite number > 0", "nan"]),
    (dict(output_size=10 ** 6), ["output_size", "at most 2147483647", "2e+12"]),
    (dict(output_size=(0, 4)), ["output_size must be an integer in [1,", "(0, 4)"]),
    (dict(output_size=2.5), ["output_size must be an integer", "2.5"]),
    (dict(dwell_cap_ms=1e300), ["dwell_cap_ms must be a finite number > 0 as a float32", "1e+300"]),
    (dict(click_mass=-1.0), ["click_mass must be a finite number >= 0", "-1.0"]),
    (dict(points=T_["points"].clone().requires_grad_()), ["points must not require grad"]),
    (dict(flips=T_["flips"].to(torch.uint8)), ["flips must be bool [B=2]", "torch.uint8"]),
    (dict(times=T_["times"].float()), ["times must be int64", "torch.float32"]),
    (dict(boxes=T_["boxes"].to("meta")), ["all tensors must be on one device", "meta"]),
]


@pytest.mark.parametrize("change, fragments", RASTER_ARGS, ids=lambda v: str(v)[:40] if isinstance(v, dict) else "")
def test_rasterize_bad_arguments(change, fragments):
    raises(lambda: rasterize_traces(**{**T_, "output_size": 4, **change}), *fragments)


RASTER_VALUES = [
    ("row out of range", dict(rows=torch.tensor([0, 2])), ["rows", "[0, 2)"]),
    ("offsets past P", dict(offsets=torch.tensor([0, 9, 6])), ["offsets must be non-decreasing within [0, P=6]"]),
    ("box x1 < x0", dict(boxes=T_["boxes"][:, [2, 1, 0, 3]]), ["boxes", "0 <= x0 < x1 <= 1"]),
    ("inf point", dict(points=T_["points"].clone().index_fill_(0, torch.tensor([4]), math.inf)),
     ["points must be finite"]),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, change, fragments", RASTER_VALUES, ids=[c[0] for c in RASTER_VALUES])
def test_rasterize_bad_values_every_backend(backend, case, change, fragments):
    """validate=False is the fast path of "triton" (no device sync); "reference" and "cpu" check regardless."""
    for validate in (True, False):
        if validate or backend != "triton":
            raises(lambda: rasterize_traces(**{**T_, "output_size": 4, "backend": backend, "validate": validate,
                                               **change}), *fragments)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rasterize_odd_layouts_equal_the_contiguous_answer(backend):
    """Zero-stride points, transposed boxes, int32 rows and offsets: the contiguous int64 call's maps."""
    odd = dict(points=T_["points"][:1].expand(6, 2), boxes=T_["boxes"].T.contiguous().T,
               rows=T_["rows"].int(), offsets=T_["offsets"].int())
    got = rasterize_traces(**{**T_, **odd}, output_size=(3, 4), backend=backend)
    want = rasterize_traces(**{**T_, **{k: v.contiguous().long() if not v.is_floating_point() else v.contiguous()
                                        for k, v in odd.items()}}, output_size=(3, 4), backend=backend)
    assert torch.equal(got, want) and got.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_rasterize_huge_sigma_is_the_uniform_map(backend):
    """σ = 1e10 pixels: every pixel the same, normalised to sum 1 (the C++ kernel once sized a buffer by σ
    and aborted the interpreter)."""
    heat = rasterize_traces(**T_, output_size=(3, 4), sigma=1e10, backend=backend)
    torch.testing.assert_close(heat, torch.full((2, 3, 4), 1 / 12), rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------- fuzz
FINITE = st.floats(-50, 50, allow_nan=False, width=32)
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, 3e38, -1e30])


def spoiler(*names):
    """Which input an example spoils: None or one of ``names``, alike (one fault at a time, so that each is
    reached, and reaches the backend, often)."""
    return st.sampled_from([None, *names])


def _outcome(fn):
    """("error", message) for the documented ValueError, else ("ok", result); any other exception fails."""
    try:
        out = "ok", fn()
    except ValueError as exc:
        out = "error", str(exc)
    event(out[0] if out[0] == "ok" else out[1].split(" ")[0])  # --hypothesis-show-statistics: the mix
    return out


def _values(draw, n, spoil):
    """n finite floats, one of them made NaN/inf/huge when ``spoil``."""
    v = draw(st.lists(FINITE, min_size=n, max_size=n))
    if spoil and n:
        v[draw(st.integers(0, n - 1))] = draw(SPECIAL)
    return v


def _boxes(draw, B, spoil):
    """[B, 4] crops inside the image; one corner moved out of it or past the other when ``spoil``."""
    lo = torch.tensor(draw(st.lists(st.floats(0, 0.9), min_size=2 * B, max_size=2 * B))).view(B, 2)
    size = torch.tensor(draw(st.lists(st.floats(0.01, 1), min_size=2 * B, max_size=2 * B))).view(B, 2)
    boxes = torch.cat([lo, (lo + size * (1 - lo)).clamp(max=1)], 1)
    if spoil and B:
        boxes[draw(st.integers(0, B - 1)), draw(st.integers(0, 3))] = draw(st.sampled_from([-0.1, 1.5, 0.0, math.nan]))
    return boxes


@FUZZ
@given(data=st.data(), B=st.integers(0, 3), K=st.integers(1, 3), S=st.integers(1, 4), C=st.integers(0, 4),
       softmax=st.booleans())
def test_fuzz_label_pool_backends_agree(data, B, K, S, C, softmax):
    """Random shapes, dtypes and hostile values: "reference" and "cpu" both raise ValueError, or both give the
    same finite answer (ReLabel's own path's, bit for bit, for "reference")."""
    draw = data.draw
    C += K  # room for K distinct classes (the "class" spoil moves one out of range)
    spoil = draw(spoiler("score", "big score", "score dtype", "class", "index dtype", "box", "output_size"))
    n = B * K * S * S
    values = _values(draw, n, spoil == "score")
    if spoil == "big score" and n:
        values[0] = draw(st.sampled_from([2.0 ** 22, -3e38, 1e10]))
    scores = torch.tensor(values, dtype=torch.float32).view(B, K, S, S).to(
        draw(st.sampled_from([torch.float64, torch.int32] if spoil == "score dtype"
                             else [torch.float32, torch.float16, torch.bfloat16])))
    top = torch.rand(B, S, S, C).argsort(-1)[..., :K].permute(0, 3, 1, 2)  # distinct along K
    if spoil == "class":
        top = top + draw(st.sampled_from([-1, 1]))  # a class -1 or C somewhere (unless B = 0)
    indices = top.to(draw(st.sampled_from([torch.uint8, torch.bool, torch.int8] if spoil == "index dtype"
                                          else [torch.int64, torch.int32, torch.int16, torch.float32])))
    boxes = _boxes(draw, B, spoil == "box")
    out = draw(st.sampled_from([0, 10 ** 6, 2.0, (3, 10 ** 9)] if spoil == "output_size" else [1, 2, (1, 3)]))
    fn = label_pool_targets if softmax else label_pool
    results = [_outcome(lambda b=b: fn(scores, indices, boxes, C, out, backend=b))
               for b in (["reference", "cpu"] if HAS_EXT else ["reference"])]
    kinds = {kind for kind, _ in results}
    assert len(kinds) == 1, results
    if kinds == {"ok"}:
        ref = results[0][1]
        assert torch.isfinite(ref).all()
        for _, got in results[1:]:
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        want = label_pool_reference(scores.float(), indices.long(), boxes.float(), C,
                                    *((out, out) if isinstance(out, int) else out))
        want = want.movedim(1, -1).softmax(-1).movedim(-1, 1) if softmax else want
        assert torch.equal(ref, want.flatten(1) if ref.dim() == 2 else want)


@FUZZ
@given(data=st.data(), B=st.integers(0, 4), C=st.integers(1, 6), hard=st.booleans())
def test_fuzz_luab_loss_is_torch_or_a_named_error(data, B, C, hard):
    """Random targets (classes in and out of range, soft rows on and off the simplex) and logits: a ValueError
    naming an argument, or F.cross_entropy's value, finite."""
    draw = data.draw
    spoil = draw(spoiler("logits", "target", "label_smoothing"))
    logits = torch.tensor(_values(draw, B * C, spoil == "logits"), dtype=torch.float32).view(B, C)
    if hard:
        target = torch.tensor(draw(st.lists(st.integers(0, C - 1), min_size=B, max_size=B)), dtype=torch.int64)
        if spoil == "target" and B:
            target[draw(st.integers(0, B - 1))] = draw(st.sampled_from([-1, C, 2 ** 40]))
    else:
        raw = torch.tensor(draw(st.lists(st.floats(0.0625, 2, width=32), min_size=B * C, max_size=B * C))).view(B, C)
        target = raw / raw.sum(1, keepdim=True).clamp_min(1e-6)
        target = target.to(draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64])))
        if spoil == "target" and B:
            target[draw(st.integers(0, B - 1)), draw(st.integers(0, C - 1))] += draw(st.sampled_from([-0.5, 0.3,
                                                                                                        -2.0]))
    eps = draw(st.sampled_from([1.5, -0.1, math.nan, True]) if spoil == "label_smoothing"
               else st.sampled_from([0.0, 0.1, 1.0]))
    kind, got = _outcome(lambda: luab_loss(logits, target, label_smoothing=eps, backend="reference"))
    if kind == "error":
        assert got.split(" ")[0] in ("logits", "target", "label_smoothing"), got
        return
    loss, parts = got
    assert torch.isfinite(loss)
    want = F.cross_entropy(logits, target if hard else target.float(), label_smoothing=eps)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-5)
    if not hard:  # accepted soft rows are probability rows
        t = target.double()
        assert (t >= 0).all() and ((t.sum(1) - 1).abs() <= 2 ** -7).all()


@FUZZ
@given(data=st.data(), N=st.integers(0, 3), B=st.integers(0, 3), h=st.integers(1, 5), w=st.integers(1, 5))
def test_fuzz_rasterize_backends_agree(data, N, B, h, w):
    """Random ragged stores, rows, boxes, sigmas (tiny to huge) and weightings: "reference" and "cpu" both
    raise ValueError, or both give the same finite maps."""
    draw = data.draw
    B = B if N else 0  # (rows of an empty store are all out of range: the "row" spoil covers that)
    spoil = draw(spoiler("offsets", "point", "row", "sigma", "box", "output_size"))
    counts = draw(st.lists(st.integers(0, 4), min_size=N, max_size=N))
    offsets = torch.tensor([0] + list(np.cumsum(counts)), dtype=torch.int64)
    if N and spoil == "offsets":
        offsets[draw(st.integers(0, N))] += draw(st.sampled_from([-1, 1, 100]))
    P = sum(counts)
    points = torch.tensor(draw(st.lists(st.floats(-0.5, 1.5, width=32), min_size=2 * P, max_size=2 * P))).view(P, 2)
    if P and spoil == "point":
        points[draw(st.integers(0, P - 1)), 0] = draw(st.sampled_from([math.nan, math.inf, 1e30]))
    times = torch.tensor(draw(st.lists(st.integers(0, 10 ** 13), min_size=P, max_size=P)), dtype=torch.int64)
    rows = torch.tensor(draw(st.lists(st.integers(0, max(N - 1, 0)), min_size=B, max_size=B)), dtype=torch.int64)
    if B and spoil == "row":
        rows[draw(st.integers(0, B - 1))] = draw(st.sampled_from([-1, N]))
    sigma = draw(st.sampled_from([1e-3, 1e4, 1e10, 1e-30, 0.0, 1e30, math.inf]) if spoil == "sigma"
                 else st.floats(0.2, 4))
    output_size = draw(st.sampled_from([(0, w), 10 ** 6, 1.5]) if spoil == "output_size" else st.just((h, w)))
    kw = dict(points=points, times=times, offsets=offsets, rows=rows, boxes=_boxes(draw, B, spoil == "box"),
              flips=torch.tensor(draw(st.lists(st.booleans(), min_size=B, max_size=B)), dtype=torch.bool),
              output_size=output_size, sigma=sigma, weighting=draw(st.sampled_from(["uniform", "dwell"])),
              normalize=draw(st.sampled_from(["sum", "max", "none"])))
    results = [_outcome(lambda b=b: rasterize_traces(**kw, backend=b))
               for b in (["reference", "cpu"] if HAS_EXT else ["reference"])]
    kinds = {kind for kind, _ in results}
    assert len(kinds) == 1, results
    if kinds == {"ok"}:
        ref = results[0][1]
        assert ref.shape == (B, h, w) and torch.isfinite(ref).all()
        if B and N and kw["normalize"] == "sum":  # a map is empty (all 0) or sums to 1
            sums = ref.double().flatten(1).sum(1)
            assert ((sums == 0) | ((sums - 1).abs() < 1e-4)).all(), sums
        for _, got in results[1:]:
            if B:  # within 1e-5 of each map's peak, the backends' contract (tests/test_rasterize.py)
                peak = ref.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]
                assert float(((got - ref).abs() / peak).max()) <= 1e-5
