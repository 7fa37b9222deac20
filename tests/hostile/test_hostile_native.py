"""Hostile input at the compiled core (luab_fast._C, csrc/): every function refuses bad arguments with a
ValueError that names them, and never aborts, segfaults or reads out of bounds.

Whatever could take the interpreter down (it did before: std::bad_alloc thrown inside an OpenMP region for a
huge sigma, libgomp's segfault for 100000 threads) runs in a child process, so a crash fails one case, not the
suite. The fuzz cases run hypothesis in a child process too, with the property "either a result equal to the
reference, or a ValueError naming an argument; valid input never raises".
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import run_python

pytest.importorskip("luab_fast._C")

# What every child snippet starts with: small valid calls of each function, any argument overridable.
PRELUDE = """\
import sys
import numpy as np
from luab_fast import _C
A, O = _C.aggregate, _C.ops
f32, i64 = np.float32, np.int64
t = np.array([0, 0, 1, 2], i64); w = np.array([0, 1, 1, 0], i64); l = np.array([0, 1, 1, 0], i64)
def lp(**kw):  # label_pool: 1 crop, K=2 classes of 4 at every cell of a 3x3 map
    a = dict(scores=np.ones((1, 2, 3, 3), f32), indices=np.stack([np.zeros((3, 3), i64), np.ones((3, 3), i64)])[None],
             boxes=np.array([[0.1, 0.1, 0.9, 0.9]], f32), num_classes=4)
    a.update(kw)
    return O.label_pool(**a)
def rt(**kw):  # rasterize_traces: one sample of 3 points, one crop
    a = dict(points=np.full((3, 2), 0.5, f32), times=np.arange(3, dtype=i64), offsets=np.array([0, 3], i64),
             rows=np.array([0], i64), boxes=np.array([[0, 0, 1, 1]], f32), flips=np.zeros(1, np.uint8), h=4, w=5,
             sigma=1.0, dwell=False, dwell_cap_ms=1000.0)
    a.update(kw)
    return O.rasterize_traces(**a)
"""


def expect_value_error(call: str, *fragments: str) -> str:
    """Runs ``call`` after PRELUDE in a child process: it must raise ValueError (caught there) whose message holds
    every fragment; a signal (negative status), a return or another exception fails."""
    code = (PRELUDE + "try:\n    " + call + "\nexcept ValueError as e:\n    print('ValueError:', e)\n"
            "    sys.exit(0)\nprint('returned without an error')\nsys.exit(3)\n")
    r = run_python(code, timeout=60)
    assert r.status == 0, f"status {r.status} (negative: killed by a signal)\nstdout: {r.out}\nstderr: {r.err}"
    assert "Traceback" not in r.err, r.err
    low = r.out.lower()
    for frag in fragments:
        assert frag.lower() in low, f"{frag!r} not in the message: {r.out}"
    return r.out


# (case id) -> (call in the child, fragments of the message). Each used to crash, read out of bounds, or pass
# silently wrong values before this suite, unless it is a regression guard of an existing check.
CRASH_CASES = {
    # thread counts: libgomp segfaulted on 100000; every binding that takes n_threads checks the same cap
    "DS 100000 threads": ("A.dawid_skene(t, w, l, 3, 2, 2, n_threads=100000)", "n_threads", "1024", "100000"),
    "MV -1 threads": ("A.majority_vote(t, w, l, 3, 2, 2, n_threads=-1)", "n_threads", "got -1"),
    "Bayes 1025 threads": ("A.bayes(t, w, l, 3, 2, 2, np.ones((2, 2)), n_threads=1025)", "n_threads", "1025"),
    "argmax 2**40 threads": ("A.argmax_rows(np.zeros((2, 3)), 2**40)", "n_threads", str(2**40)),
    "label_pool 100000 threads": ("lp(n_threads=100000)", "n_threads", "100000"),
    "rasterize 100000 threads": ("rt(n_threads=100000)", "n_threads", "100000"),
    "ImageNet-AB XML 100000 threads": ("_C.byproducts.parse_imagenet_xml([b'<a/>'] * 100, n_threads=100000)",
                                       "n_threads", "100000"),
    # class counts and table sizes whose products overflow int64 (a wrapped size allocates a small table)
    "label_pool 2**31 classes": ("lp(num_classes=2**31)", "num_classes", "2147483648"),
    "label_pool 0 classes": ("lp(num_classes=0)", "num_classes", ">= 1"),
    "label_pool output overflow": ("lp(num_classes=2**30, out_h=2**20, out_w=2**20)", "out_h * out_w", "too large"),
    "DS 2**31 classes": ("A.dawid_skene(t, w, l, 3, 2, 2**31)", "n_classes", "65536"),
    "DS 0 classes": ("A.dawid_skene(t, w, l, 3, 2, 0)", "n_classes must be >= 1"),
    "DS int32 confusion cells": ("A.dawid_skene(t, w, l, 3, 2, 46341)", "n_classes must be <= 46340", "one-coin"),
    "DS tasks x classes overflow": ("A.dawid_skene(t, w, l, 2**61, 2, 16)", "n_tasks * n_classes", "too large"),
    "Bayes confusion overflow": ("A.bayes(t, w, l, 3, 2**31 - 1, 65536, np.ones((2, 2)))",
                                 "n_workers * n_classes * n_classes", "too large"),
    "rasterize output overflow": ("rt(h=2**40, w=2**40)", "h * w", "too large"),
    # ids, layouts, values
    "DS negative task id": ("A.dawid_skene(np.array([0, -1, 1, 2], i64), w, l, 3, 2, 2)", "task ids", "[0, 3)", "-1"),
    "DS int32 ids": ("A.dawid_skene(t.astype(np.int32), w, l, 3, 2, 2)", "task must be a int64", "int32"),
    "DS mismatched lengths": ("A.dawid_skene(t, w[:3], l, 3, 2, 2)", "worker must have shape (4,)", "(3,)"),
    "DS NaN init_post": ("A.dawid_skene(t, w, l, 3, 2, 2, init_post=np.full((3, 2), np.nan))", "init_post", "finite"),
    "DS negative task_prior": ("A.dawid_skene(t, w, l, 3, 2, 2, task_prior=-np.ones((3, 2)))", "task_prior", ">= 0"),
    "DS inf alpha": ("A.dawid_skene(t, w, l, 3, 2, 2, alpha=np.full((2, 2), np.inf))", "alpha", "finite"),
    "one-coin alpha shape": ("A.dawid_skene(t, w, l, 3, 2, 2, alpha=np.ones(3), one_coin=True)",
                             "alpha must have shape (2,)"),
    "MV NaN weights": ("A.majority_vote(t, w, l, 3, 2, 2, np.array([1.0, np.nan]))", "weights", "finite"),
    "Bayes max_iter 2**40": ("A.bayes(t, w, l, 3, 2, 2, np.ones((2, 2)), max_iter=2**40)", "max_iter"),
    "label_pool negative index": ("lp(indices=-np.ones((1, 2, 3, 3), i64))", "indices", "[0, num_classes=4)"),
    "label_pool byte-swapped": ("lp(indices=np.stack([np.zeros((3, 3)), np.ones((3, 3))])[None].astype('>i8'))",
                                "indices", "byte order"),
    "label_pool strided scores": ("lp(scores=np.ones((1, 2, 3, 6), f32)[..., ::2])", "scores", "C-contiguous"),
    "label_pool NaN score": ("lp(scores=np.full((1, 2, 3, 3), np.nan, f32))", "scores must be finite"),
    "rasterize row out of range": ("rt(rows=np.array([5], i64))", "rows[0]", "[0, 1)", "5"),
    "rasterize decreasing offsets": ("rt(offsets=np.array([0, 2, 1, 3], i64), rows=np.array([1], i64))",
                                     "offsets must be non-decreasing"),
    "rasterize sigma 1e30": ("rt(sigma=1e30)", "sigma", "1e+30"),
    "rasterize sigma 1e-30": ("rt(sigma=1e-30)", "sigma", "1e-30"),
    "rasterize clicks without offsets": ("rt(click_points=np.zeros((1, 2), f32))", "click_points and click_offsets"),
    "rasterize NaN point": ("rt(points=np.array([[0.5, 0.5], [np.nan, 0.5], [0.5, 0.5]], f32))",
                            "points must be finite"),
    "rasterize float64 points": ("rt(points=np.full((3, 2), 0.5))", "points must be float32"),
    # the CSV row formatter (annotate's posteriors.csv) and the multi-column id encoder
    "csv_rows 100000 threads": ("_C.io.csv_rows(['a'], np.zeros((1, 2), f32), n_threads=100000)", "n_threads"),
    "csv_rows ids short": ("_C.io.csv_rows(['a'], np.zeros((2, 2), f32))", "ids must hold one id per row"),
    "csv_rows float64": ("_C.io.csv_rows(['a'], np.zeros((1, 2)))", "values must be a float32"),
    "factorize columns flags": ("A.factorize_integer_columns([t, w], [True])", "sorted must hold one flag"),
    "factorize columns int32": ("A.factorize_integer_columns([t, w.astype(np.int32)], [True, False])",
                                "columns[1] must be a int64"),
    "factorize columns 100000 threads": ("A.factorize_integer_columns([t], [True], n_threads=100000)", "n_threads"),
}


@pytest.mark.parametrize("case", CRASH_CASES)
def test_compiled_call_raises_value_error(case):
    call, *fragments = CRASH_CASES[case]
    expect_value_error(call, *fragments)


# ---------------------------------------------------------------------------------------- wide Gaussians
def test_huge_sigma_is_the_reference_flat_map():
    """sigma = 1e10 reserved n * 2 * (8 sigma + 4) doubles inside the OpenMP region: std::bad_alloc, SIGABRT. Now the
    splat is cut to the map, chunked (1000 points: two chunks) and equals the pure-PyTorch reference."""
    code = """\
import numpy as np, torch
from luab_fast import _C
from luab_fast.ops.rasterize import rasterize_traces_reference as ref
g = torch.Generator().manual_seed(0)
P = 1000  # the 56 x 40 map takes 96 factors a point: 682 points a chunk, so two chunks
pts = torch.rand(P, 2, generator=g) * 1.2 - 0.1
times = torch.sort(torch.randint(0, 10**6, (P,), generator=g)).values
off = torch.tensor([0, 7, 7, P]); rows = torch.tensor([0, 2, 1, 2])
boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9]] * 4); flips = torch.tensor([False, True, False, True])
worst = 0.0
for sigma, norm, name, dwell in ((1e10, 1, "sum", False), (1e10, 0, "none", True), (1e18, 2, "max", False),
                                 (300.0, 1, "sum", True)):
    c = torch.from_numpy(_C.ops.rasterize_traces(pts.numpy(), times.numpy(), off.numpy(), rows.numpy(), boxes.numpy(),
                         flips.to(torch.uint8).numpy(), 56, 40, sigma, dwell, 1000.0, None, None, 1.0, norm, 2))
    r = ref(pts, times, off, rows, boxes, flips, 56, 40, sigma, dwell, 1000.0, None, None, 1.0, name)
    peak = r.flatten(1).amax(1).clamp_min(1e-38)[:, None, None]
    worst = max(worst, float(((c - r).abs() / peak).max()))
    if sigma > 1e9 and name == "sum":  # the math: a Gaussian far wider than the map is flat on it
        with_points = c[rows != 1]  # row 1 has no points: an empty map
        assert torch.allclose(with_points, torch.full_like(with_points, 1 / (56 * 40)), rtol=1e-6), c
print("worst", worst)
assert worst <= 1e-5, worst
"""
    r = run_python(code, timeout=120)
    assert r.status == 0, f"status {r.status}\n{r.out}\n{r.err}"


# ------------------------------------------------------------------------------------------ thread counts
@pytest.mark.parametrize("n_threads", [0, -1, 1025, 100000])
def test_estimator_refuses_thread_count(n_threads):
    """DawidSkene(n_threads=100000) segfaulted in libgomp; 0 and negatives are refused by the Python layer, and the
    C++ layer refuses anything outside 0..1024 on its own."""
    code = f"""\
import sys
import pandas as pd
from luab_fast.aggregate import DawidSkene
df = pd.DataFrame({{"task": [0, 0, 1], "worker": [0, 1, 1], "label": [0, 1, 1]}})
try:
    DawidSkene(n_threads={n_threads}).fit(df)
except ValueError as e:
    print("ValueError:", e)
    sys.exit(0)
sys.exit(3)
"""
    r = run_python(code, timeout=60)
    assert r.status == 0, f"status {r.status}\n{r.out}\n{r.err}"
    assert "n_threads" in r.out and str(n_threads) in r.out, r.out


@pytest.mark.parametrize("n_threads", [1, 2, 1024])
def test_thread_counts_up_to_the_cap_give_the_same_result(n_threads):
    """1..1024 threads are accepted by every binding and change nothing in the results (0: OpenMP's default)."""
    from luab_fast import _C

    assert _C.MAX_THREADS == 1024
    rng = np.random.default_rng(0)
    t, w, lab = (rng.integers(0, n, 200).astype(np.int64) for n in (50, 7, 3))
    agg = _C.aggregate
    for fn, kw in ((agg.majority_vote, {}), (agg.dawid_skene, {"n_iter": 3}),
                   (agg.bayes, {"alpha": np.ones((3, 3)), "max_iter": 3})):
        one = fn(t, w, lab, 50, 7, 3, **kw, n_threads=0)
        many = fn(t, w, lab, 50, 7, 3, **kw, n_threads=n_threads)
        post = (one, many) if isinstance(one, np.ndarray) else (one["post"], many["post"])
        assert np.array_equal(*post), fn.__name__
    scores = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    idx = np.stack([np.zeros((3, 4, 4)), np.ones((3, 4, 4))], 1).astype(np.int64)
    boxes = np.array([[0.1, 0.1, 0.9, 0.8]] * 3, np.float32)
    assert np.array_equal(_C.ops.label_pool(scores, idx, boxes, 5, n_threads=0),
                          _C.ops.label_pool(scores, idx, boxes, 5, n_threads=n_threads))
    pts = rng.random((9, 2)).astype(np.float32)
    args = (pts, np.arange(9, dtype=np.int64), np.array([0, 4, 9], np.int64), np.array([1, 0, 1], np.int64), boxes,
            np.array([0, 1, 0], np.uint8), 6, 5, 1.5, False, 1000.0)
    assert np.array_equal(_C.ops.rasterize_traces(*args, n_threads=0),
                          _C.ops.rasterize_traces(*args, n_threads=n_threads))


# ------------------------------------------------------------------------------------------------ fuzzing
# The fuzz targets run in a child process (test_fuzz below): a crash there fails the case, not the suite.
FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
ARG_NAMES = ("scores", "indices", "boxes", "num_classes", "output_size", "n_threads", "task", "worker", "label",
             "n_tasks", "n_workers", "n_classes", "weights", "points", "times", "offsets", "rows", "flips",
             "sigma", "out_size", "normalize", "click", "B * num_classes")


def _names_an_argument(err: ValueError) -> None:
    msg = str(err)
    assert any(msg.startswith(n) for n in ARG_NAMES), f"message names no argument: {msg}"


def _corrupt(rng: np.random.Generator, a: np.ndarray, how: str, value) -> np.ndarray:
    """a with one random element set to value (when how != "none" and a has elements)."""
    a = a.copy()
    if how != "none" and a.size:
        a.flat[rng.integers(a.size)] = value
    return a


@st.composite
def label_pool_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    B, K, S = draw(st.integers(0, 2)), draw(st.integers(0, 3)), draw(st.integers(0, 4))
    C = draw(st.sampled_from([-1, 0, 1, 3, 6, 2**31]))
    idt = draw(st.sampled_from(["<i2", "<i4", "<i8", "<i8", ">i4", "<u2", "<f4", "<i1"]))
    sdt = draw(st.sampled_from(["<f4", "<f4", "<f4", "<f8", ">f4"]))
    n_cls = max(min(C, 6), K, 1)  # the ids drawn: a distinct top-K of n_cls classes per cell
    idx = np.argsort(rng.random((B, n_cls, S, S)), axis=1)[:, :K]
    idx = _corrupt(rng, idx, draw(st.sampled_from(["none", "none", "x"])), draw(st.sampled_from([-1, n_cls, 0])))
    scores = _corrupt(rng, rng.standard_normal((B, K, S, S)), draw(st.sampled_from(["none", "none", "x"])),
                      draw(st.sampled_from([np.nan, np.inf, 1e30])))
    lo = rng.random((B, 2)) * 0.5
    boxes = np.concatenate([lo, lo + 0.05 + rng.random((B, 2)) * 0.45], 1)
    boxes = _corrupt(rng, boxes, draw(st.sampled_from(["none", "none", "x"])), draw(st.sampled_from([np.nan, -0.1,
                                                                                                    1.5, 0.0])))
    scores, idx, boxes = scores.astype(sdt), idx.astype(idt), boxes.astype(np.float32)
    if draw(st.booleans()) and scores.ndim == 4 and S > 1:
        scores = np.ascontiguousarray(np.repeat(scores, 2, axis=3))[..., ::2]  # strided
    return scores, idx, boxes, C, draw(st.integers(0, 3)), draw(st.integers(0, 2)), draw(st.booleans())


def _label_pool_valid(scores, idx, boxes, C, oh, ow) -> bool:
    B, K, S = idx.shape[:3]
    if not (1 <= C < 2**31 and K >= 1 and S >= 1 and oh >= 1 and ow >= 1):
        return False
    if scores.dtype != np.float32 or not scores.dtype.isnative or not scores.flags.c_contiguous:
        return False
    if idx.dtype.kind != "i" or idx.dtype.itemsize == 1 or not idx.dtype.isnative:
        return False
    if not np.isfinite(scores).all() or ((idx < 0) | (idx >= C)).any():
        return False
    if K > 1 and (np.sort(idx, axis=1)[:, 1:] == np.sort(idx, axis=1)[:, :-1]).any():
        return False
    x0, y0, x1, y1 = boxes.T
    return bool(np.all((x0 >= 0) & (y0 >= 0) & (x1 <= 1) & (y1 <= 1) & (x0 < x1) & (y0 < y1)))


@FUZZ
@given(label_pool_case())
def fuzz_label_pool(case):
    import torch

    from luab_fast import _C
    from luab_fast.ops.label_pool import label_pool_reference, softmax_classes

    scores, idx, boxes, C, oh, ow, softmax = case
    valid = _label_pool_valid(scores, idx, boxes, C, oh, ow)
    try:
        out = _C.ops.label_pool(scores, idx, boxes, C, oh, ow, False, softmax, 2)
    except ValueError as e:
        assert not valid, f"valid input refused: {e}"
        _names_an_argument(e)
        return
    assert valid, "invalid input accepted"
    ref = label_pool_reference(torch.from_numpy(scores), torch.from_numpy(idx.astype(np.int64)),
                               torch.from_numpy(boxes), C, oh, ow)
    if softmax:
        ref = softmax_classes(ref)
        assert np.allclose(out, ref.numpy(), rtol=1e-5, atol=1e-7)
    else:
        assert np.array_equal(out, ref.numpy())  # bit-identical to torchvision's roi_align


@st.composite
def crowd_case(draw):
    """A valid crowd (ids in range) with at most one fault, so that valid calls are common too."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, T, W = draw(st.integers(0, 8)), draw(st.integers(0, 5)), draw(st.integers(0, 4))
    K = draw(st.sampled_from([1, 2, 3, 5]))
    cols = [rng.integers(0, max(m, 1), n).astype(np.int64) for m in (T, W, K)]
    if T == 0 or W == 0:
        cols = [c[:0] for c in cols]  # no ids fit: no labels
    weights = rng.random(W) * 2 if draw(st.booleans()) else None
    fault = draw(st.sampled_from(["none", "none", "none", "id", "length", "int32", "sizes", "weights"]))
    col = draw(st.integers(0, 2))
    if fault == "id" and len(cols[col]):
        cols[col] = _corrupt(rng, cols[col], "x", draw(st.sampled_from([-1, (T, W, K)[col], 2**40])))
    elif fault == "length":
        cols[col] = np.r_[cols[col], 0]
    elif fault == "int32":
        cols[col] = cols[col].astype(np.int32)
    elif fault == "sizes":
        T, W, K = draw(st.sampled_from([(-1, W, K), (T, -1, K), (T, W, 0), (T, W, -1), (T, W, 70000)]))
    elif fault == "weights":
        weights = _corrupt(rng, np.ones(W), "x", draw(st.sampled_from([np.nan, -1.0, np.inf])))
    return cols, T, W, K, weights


def _crowd_valid(cols, T, W, K, weights) -> bool:
    t, w, lab = cols
    if any(c.dtype != np.int64 for c in cols) or not (len(t) == len(w) == len(lab)):
        return False
    if T < 0 or W < 0 or not 1 <= K <= 65536:
        return False
    if ((t < 0) | (t >= T)).any() or ((w < 0) | (w >= W)).any() or ((lab < 0) | (lab >= K)).any():
        return False
    if weights is not None and weights.shape != (W,):
        return False
    return weights is None or bool(np.all(np.isfinite(weights) & (weights >= 0)))


@FUZZ
@given(crowd_case())
def fuzz_aggregate(case):
    from luab_fast import _C

    cols, T, W, K, weights = case
    valid = _crowd_valid(cols, T, W, K, weights)
    try:
        mv = _C.aggregate.majority_vote(*cols, T, W, K, weights, 2)
        ds = _C.aggregate.dawid_skene(*cols, T, W, K, n_iter=5, n_threads=2)["post"]
    except ValueError as e:
        assert not valid, f"valid input refused: {e}"
        _names_an_argument(e)
        return
    assert valid, "invalid input accepted"
    t, w, lab = cols
    votes = np.zeros((T, K))
    np.add.at(votes, (t, lab), 1.0 if weights is None else weights[w])
    total = votes.sum(1, keepdims=True)
    expect = np.where(total > 0, votes / np.where(total > 0, total, 1), 1.0 / K)
    assert np.allclose(mv, expect, rtol=1e-12, atol=0)
    assert ds.shape == (T, K) and np.isfinite(ds).all() and np.allclose(ds.sum(1), 1.0)


@st.composite
def rasterize_case(draw):
    """A valid batch with at most one fault (or a sigma from tiny to huge), so that valid calls are common too."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    P, N, B = draw(st.integers(0, 6)), draw(st.integers(1, 3)), draw(st.integers(0, 3))
    points = rng.random((P, 2)) * 1.2 - 0.1
    offsets = np.r_[0, np.sort(rng.integers(0, P + 1, N - 1)), P]
    rows = rng.integers(0, N, B)
    lo = rng.random((B, 2)) * 0.5
    boxes = np.concatenate([lo, lo + 0.05 + rng.random((B, 2)) * 0.45], 1)
    a = dict(points=points.astype(np.float32), times=np.sort(rng.integers(0, 3000, P)), offsets=offsets,
             rows=rows, boxes=boxes.astype(np.float32), flips=rng.integers(0, 2, B, np.uint8),
             h=draw(st.sampled_from([1, 3, 5])), w=draw(st.sampled_from([1, 4])),
             sigma=draw(st.sampled_from([0.4, 1.0, 3.0, 1e10, 1e30, 1e-30])), dwell=draw(st.booleans()),
             dwell_cap_ms=1000.0, normalize=draw(st.integers(0, 2)))
    fault = draw(st.sampled_from(["none", "none", "none", "point", "offset", "row", "box", "dtype", "h", "sigma",
                                  "normalize"]))
    if fault == "point":
        a["points"] = _corrupt(rng, a["points"], "x", np.nan)
    elif fault == "offset":
        a["offsets"] = _corrupt(rng, a["offsets"], "x", draw(st.sampled_from([-1, P + 1, P // 2])))
    elif fault == "row":
        a["rows"] = _corrupt(rng, a["rows"], "x", draw(st.sampled_from([-1, N])))
    elif fault == "box":
        a["boxes"] = _corrupt(rng, a["boxes"], "x", draw(st.sampled_from([np.nan, -0.1, 1.5, 0.0])))
    elif fault == "dtype":
        a["points"] = a["points"].astype(np.float64)
    elif fault == "h":
        a["h"] = draw(st.sampled_from([0, -1]))
    elif fault == "sigma":
        a["sigma"] = draw(st.sampled_from([float("nan"), -1.0, 0.0, float("inf")]))
    elif fault == "normalize":
        a["normalize"] = draw(st.sampled_from([-1, 3]))
    return a


def _rasterize_valid(a) -> bool:
    N, P = len(a["offsets"]) - 1, len(a["points"])
    sigma = np.float32(a["sigma"]) if np.isfinite(a["sigma"]) and abs(a["sigma"]) < 1e38 else np.float32(np.inf)
    with np.errstate(all="ignore"):
        two_s2 = np.float32(2) * sigma * sigma
        ok_sigma = bool(sigma > 0 and np.isfinite(two_s2) and two_s2 >= np.finfo(np.float32).tiny)
    if not (ok_sigma and a["h"] >= 1 and a["w"] >= 1 and 0 <= a["normalize"] <= 2 and N >= 0):
        return False
    off, rows = a["offsets"], a["rows"]
    if a["points"].dtype != np.float32 or off[0] != 0 or off[-1] != P or ((rows < 0) | (rows >= N)).any():
        return False
    if (off[rows] > off[rows + 1]).any() or (off[rows] < 0).any() or (off[rows + 1] > P).any():
        return False
    # the kernel checks what it reads: the points of the rows in the batch
    if not all(np.isfinite(a["points"][off[r]:off[r + 1]]).all() for r in rows):
        return False
    x0, y0, x1, y1 = a["boxes"].T
    return bool(np.all((x0 >= 0) & (y0 >= 0) & (x1 <= 1) & (y1 <= 1) & (x0 < x1) & (y0 < y1)))


@FUZZ
@given(rasterize_case())
def fuzz_rasterize(a):
    import torch

    from luab_fast import _C
    from luab_fast.ops.rasterize import rasterize_traces_reference

    valid = _rasterize_valid(a)
    try:
        out = _C.ops.rasterize_traces(**a, n_threads=2)
    except ValueError as e:
        assert not valid, f"valid input refused: {e}"
        _names_an_argument(e)
        return
    assert valid, "invalid input accepted"
    ts = {k: torch.from_numpy(a[k]) for k in ("points", "times", "offsets", "rows", "boxes")}
    ref = rasterize_traces_reference(ts["points"], ts["times"], ts["offsets"], ts["rows"], ts["boxes"],
                                     torch.from_numpy(a["flips"]).bool(), a["h"], a["w"], a["sigma"], a["dwell"],
                                     a["dwell_cap_ms"], normalize=("none", "sum", "max")[a["normalize"]]).numpy()
    peak = np.maximum(ref.max(axis=(1, 2), initial=0), 1e-38)[:, None, None]
    assert np.all(np.abs(out - ref) <= 1e-5 * peak), (out, ref)


@pytest.mark.parametrize("target", ["fuzz_label_pool", "fuzz_aggregate", "fuzz_rasterize"])
def test_fuzz(target):
    """Hypothesis over random shapes, dtypes, ids and values: a result equal to the reference, or a ValueError
    naming an argument; never a crash, never a refusal of valid input."""
    r = run_python(f"from tests.hostile.test_hostile_native import {target}; {target}(); print('fuzzed')", timeout=150)
    assert r.status == 0 and "fuzzed" in r.out, f"status {r.status}\n{r.out}\n{r.err[-4000:]}"


if __name__ == "__main__":  # pragma: no cover - python -m tests.hostile.test_hostile_native fuzz_rasterize
    globals()[sys.argv[1]]()
