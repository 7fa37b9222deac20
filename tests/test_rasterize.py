"""rasterize_traces (luab_fast/ops/rasterize.py, csrc/ops/rasterize.cpp, luab_fast/kernels/rasterize.py):
hand-computed maps, every backend against the reference on hostile random traces, the store's inputs,
torch.library registration, bad input. The Triton backend runs under TRITON_INTERPRET=1 here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import DEVICE, backend_device, backend_mark, backends

from luab_fast.ops.rasterize import _rasterize_op, rasterize_traces

dev_of = backend_device


def gauss(px: float, py: float, h: int, w: int, sigma: float = 1.0) -> torch.Tensor:
    """float64 [h, w]: the normalised Gaussian at (px, py) output pixels, at pixel centres, over its
    footprint (centres within 4σ of the point along x and along y)."""
    cy, cx = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    inside = ((cx - px).abs() <= 4 * sigma) & ((cy - py).abs() <= 4 * sigma)
    g = torch.exp(-((cx - px) ** 2 + (cy - py) ** 2) / (2 * sigma ** 2)) / (2 * math.pi * sigma ** 2)
    return torch.where(inside, g, 0.0)


def one_sample(xy, times=None, box=(0.0, 0.0, 1.0, 1.0), flip=False, device="cpu"):
    pts = torch.tensor(xy, dtype=torch.float32).reshape(-1, 2)
    t = torch.tensor(times if times is not None else [0] * len(pts), dtype=torch.int64)
    return dict(points=pts.to(device), times=t.to(device), offsets=torch.tensor([0, len(pts)], device=device),
                rows=torch.tensor([0], device=device), boxes=torch.tensor([box], device=device),
                flips=torch.tensor([flip], device=device))


def random_batch(n_points: list[int], B: int, seed: int, device="cpu", clicks=True):
    """A store of len(n_points) samples (hostile counts), B random rows, crops and flips."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor(n_points, dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    P = int(offsets[-1])
    points = torch.rand(P, 2, generator=g) * 1.3 - 0.15  # some outside the image, as real traces have
    times = 1_640_000_000_000 + torch.cumsum(torch.randint(0, 120, (P,), generator=g), 0)
    if P > 3:
        times[P // 2:] -= 5_000  # a later worker's trace starting earlier: a jump back in time
    rows = torch.randint(0, len(n_points), (B,), generator=g)
    lo = torch.rand(B, 2, generator=g) * 0.6
    size = torch.rand(B, 2, generator=g) * (1 - lo - 0.02) + 0.02
    boxes = torch.cat([lo, lo + size], 1).clamp(max=1.0)
    flips = torch.rand(B, generator=g) < 0.5
    out = dict(points=points, times=times, offsets=offsets, rows=rows, boxes=boxes, flips=flips)
    if clicks:
        cc = torch.randint(0, 3, (len(n_points),), generator=g)
        co = torch.cat([torch.zeros(1, dtype=torch.int64), cc.cumsum(0)])
        out["clicks"] = (torch.rand(int(co[-1]), 2, generator=g), co)
    return {k: (tuple(x.to(device) for x in v) if isinstance(v, tuple) else v.to(device)) for k, v in out.items()}


def assert_maps_close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5) -> None:
    """Within ``rel`` of each map's peak (the spec's 1e-5; far pixels are exp(-big) in any backend)."""
    got, want = got.cpu().double(), want.cpu().double()
    peak = want.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]
    err = float(((got - want).abs() / peak).max()) if want.numel() else 0.0
    assert err <= rel, f"max error {err:.3g} of the peak"


def test_point_at_the_crop_centre(backend):
    d = dev_of(backend)
    box = (0.2, 0.3, 0.6, 0.7)
    inp = one_sample([(0.4, 0.5)], box=box, device=d)
    heat = rasterize_traces(**inp, output_size=(8, 10), sigma=1.5, normalize="none", backend=backend)
    want = gauss(5.0, 4.0, 8, 10, 1.5)
    torch.testing.assert_close(heat[0].cpu().double(), want, rtol=2e-6, atol=1e-8)
    peak = 1 / (2 * math.pi * 1.5 ** 2) * math.exp(-0.25 / 1.5 ** 2)  # 4 pixels at half a pixel in x and y
    assert abs(float(heat[0].max()) - peak) < 1e-6
    summed = rasterize_traces(**inp, output_size=(8, 10), sigma=1.5, backend=backend)
    assert abs(float(summed.sum()) - 1.0) < 1e-5


def test_point_just_outside_contributes_its_inside_part(backend):
    d = dev_of(backend)
    inp = one_sample([(0.0, 0.5)], box=(0.05, 0.0, 1.0, 1.0), device=d)  # left of the crop by 0.05 of the image
    heat = rasterize_traces(**inp, output_size=16, sigma=1.0, normalize="none", backend=backend)[0].cpu().double()
    px = (0.0 - 0.05) / 0.95 * 16
    torch.testing.assert_close(heat, gauss(px, 8.0, 16, 16), rtol=2e-6, atol=1e-9)
    assert 0 < float(heat.sum()) < 0.5  # the centre is outside: less than half the mass lands in the crop
    assert float(heat[:, 0].sum()) > float(heat[:, 1].sum()) > 0  # decays away from the left edge
    assert float(heat[:, 3:].abs().sum()) == 0.0  # past the footprint (4σ from the point): nothing


def test_flipped_crop_is_the_mirrored_crop(backend):
    d = dev_of(backend)
    b = random_batch([9, 40, 1], 6, 3, d)
    plain = rasterize_traces(**{**b, "flips": torch.zeros_like(b["flips"])}, output_size=(12, 15), backend=backend)
    flipped = rasterize_traces(**{**b, "flips": torch.ones_like(b["flips"])}, output_size=(12, 15), backend=backend)
    assert_maps_close(flipped, plain.flip(-1), rel=2e-6)


def test_dwell_weights(backend):
    """Masses in seconds: dt capped at 1 s; the last point and a jump back in time get the cap."""
    d = dev_of(backend)
    xy = [(0.1, 0.1), (0.9, 0.1), (0.1, 0.9), (0.9, 0.9), (0.5, 0.5)]
    t = [0, 100, 2100, 1500, 1540]  # dts: 100, 2000 -> cap, -600 -> cap (next trace), 40, last -> cap
    heat = rasterize_traces(**one_sample(xy, t, device=d), output_size=20, weighting="dwell", normalize="none",
                            backend=backend)[0].cpu().double()
    mass = [0.1, 1.0, 1.0, 0.04, 1.0]
    want = sum(m * gauss(x * 20, y * 20, 20, 20) for m, (x, y) in zip(mass, xy))
    torch.testing.assert_close(heat, want, rtol=1e-5, atol=1e-9)
    capped = rasterize_traces(**one_sample(xy, t, device=d), output_size=20, weighting="dwell", normalize="none",
                              dwell_cap_ms=50.0, backend=backend)[0].cpu().double()
    mass = [0.05, 0.05, 0.05, 0.04, 0.05]
    torch.testing.assert_close(capped, sum(m * gauss(x * 20, y * 20, 20, 20) for m, (x, y) in zip(mass, xy)),
                               rtol=1e-5, atol=1e-9)


def test_clicks_add_their_mass(backend):
    d = dev_of(backend)
    inp = one_sample([(0.25, 0.25)], device=d)
    clicks = (torch.tensor([[0.75, 0.75]], device=d), torch.tensor([0, 1], device=d))
    heat = rasterize_traces(**inp, output_size=16, clicks=clicks, click_mass=3.0, normalize="none",
                            backend=backend)[0].cpu().double()
    torch.testing.assert_close(heat, gauss(4, 4, 16, 16) + 3 * gauss(12, 12, 16, 16), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("backend", backends("cpu", "triton"))
@pytest.mark.parametrize("case", [
    dict(n_points=[0, 1, 5, 37, 200], B=7, out=(56, 56), weighting="uniform", normalize="sum", sigma=1.0),
    dict(n_points=[1], B=1, out=(7, 13), weighting="dwell", normalize="max", sigma=0.7),
    dict(n_points=[3, 0, 0, 11], B=5, out=(17, 5), weighting="dwell", normalize="none", sigma=2.3),
    dict(n_points=[64, 65, 2], B=3, out=(70, 67), weighting="uniform", normalize="sum", sigma=3.0),  # 2x2 tiles
])
def test_backends_agree_with_the_reference(backend, case):
    kw = dict(output_size=case["out"], weighting=case["weighting"], normalize=case["normalize"], sigma=case["sigma"])
    b = random_batch(case["n_points"], case["B"], sum(case["n_points"]) + case["B"], "cpu")
    want, empty = rasterize_traces(**b, **kw, backend="reference", return_empty=True)
    d = dev_of(backend)
    got, got_empty = rasterize_traces(**{k: (tuple(x.to(d) for x in v) if isinstance(v, tuple) else v.to(d))
                                         for k, v in b.items()}, **kw, backend=backend, return_empty=True)
    assert got.shape == (case["B"], *case["out"]) and got.dtype == torch.float32
    assert_maps_close(got, want)
    assert torch.equal(got_empty.cpu(), empty)


def test_empty_maps_are_zero_and_reported(backend):
    d = dev_of(backend)
    b = random_batch([0, 4], 2, 1, d, clicks=False)
    b["rows"] = torch.tensor([0, 1], device=d)
    b["boxes"] = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2, device=d)
    b["points"] = b["points"].clamp(0, 1)
    heat, empty = rasterize_traces(**b, output_size=9, backend=backend, return_empty=True)
    assert empty.tolist() == [True, False] and float(heat[0].abs().sum()) == 0.0
    assert abs(float(heat[1].sum()) - 1) < 1e-5
    none = rasterize_traces(**{**b, "rows": b["rows"][:0], "boxes": b["boxes"][:0], "flips": b["flips"][:0]},
                            output_size=(3, 4), backend=backend)
    assert none.shape == (0, 3, 4)


def test_store_raster_inputs(tmp_path):
    """The byproduct store hands the op its whole traces and the selecting records' clicks."""
    from fixtures.stores import byproduct_samples as _samples

    from luab_fast.byproducts import ByproductStore, write_imagenet_store

    store = ByproductStore.open(write_imagenet_store(_samples(), tmp_path / "ab.store"))
    inp = store.raster_inputs("cpu")
    click_xy, click_off = inp["clicks"]
    assert click_off.tolist() == [0, 1, 4, 4, 4]  # the unselected record's and the record-less sample's: none
    assert torch.allclose(click_xy[1:4], torch.tensor([[0.5, 0.5], [0.3, 0.1], [0.9, 0.9]]))
    rows = torch.tensor([0, 1, 2, 3])
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4)
    heat, empty = rasterize_traces(**inp, rows=rows, boxes=boxes, flips=torch.zeros(4, dtype=torch.bool),
                                   output_size=16, return_empty=True)
    assert empty.tolist() == [False, False, True, True]
    traced = rasterize_traces(**{**inp, "clicks": None}, rows=rows[:1], boxes=boxes[:1],
                              flips=torch.zeros(1, dtype=torch.bool), output_size=16, normalize="none")
    assert abs(float(traced.sum()) - 2.6) < 0.3  # three points (one just past the right edge) of mass 1


def _bad_cases(d):
    b = one_sample([(0.5, 0.5), (0.2, 0.2)], [0, 10], device=d)
    nan = b["points"].clone()
    nan[1, 0] = float("nan")
    return b, [
        ("points", dict(points=b["points"][:, :1])), ("points", dict(points=nan)),
        ("times", dict(times=b["times"][:1])), ("offsets", dict(offsets=torch.tensor([0, 3], device=d))),
        ("offsets", dict(offsets=torch.tensor([1, 2], device=d))),
        ("rows", dict(rows=torch.tensor([1], device=d))), ("rows", dict(rows=torch.tensor([0.0], device=d))),
        ("boxes", dict(boxes=torch.tensor([[0.5, 0.0, 0.4, 1.0]], device=d))),
        ("boxes", dict(boxes=torch.tensor([[0.0, 0.0, 1.2, 1.0]], device=d))),
        ("boxes", dict(boxes=torch.zeros(2, 4, device=d))), ("flips", dict(flips=torch.tensor([1], device=d))),
        ("sigma", dict(sigma=0.0)), ("weighting", dict(weighting="time")), ("normalize", dict(normalize="l1")),
        ("click_mass", dict(click_mass=-1.0)), ("output_size", dict(output_size=(0, 4))),
        ("clicks", dict(clicks=(1, 2))),
        ("dwell_cap_ms", dict(dwell_cap_ms=0.0)), ("backend", dict(backend="gpu")),
    ]


def test_bad_input_names_the_argument(backend):
    good, cases = _bad_cases(dev_of(backend))
    rasterize_traces(**good, backend=backend)
    for name, change in cases:
        with pytest.raises(ValueError, match=name):
            rasterize_traces(**{**good, "backend": backend, **change})
    # offsets that decrease inside a row the batch uses
    store = one_sample([(0.5, 0.5)] * 3, device=dev_of(backend))
    store["offsets"] = torch.tensor([0, 2, 1, 3], device=dev_of(backend))
    store["rows"] = torch.tensor([1], device=dev_of(backend))
    with pytest.raises(ValueError, match="offsets"):
        rasterize_traces(**store, backend=backend)


@backend_mark("triton")
def test_unvalidated_bad_rows_never_read_outside():
    b = random_batch([5, 3], 2, 2, DEVICE, clicks=False)
    b["rows"] = torch.tensor([1, 99], device=DEVICE)
    heat = rasterize_traces(**b, output_size=8, backend="triton", validate=False)
    assert bool(torch.isfinite(heat).all()) and float(heat[1].abs().sum()) == 0.0


def test_opcheck(backend):
    d = dev_of(backend)
    b = random_batch([4, 0, 9], 3, 5, d)
    cp, co = b["clicks"]
    for dwell, clicks, norm in [(False, False, 1), (True, True, 2)]:
        args = (b["points"], b["times"], b["offsets"], b["rows"], b["boxes"], b["flips"], cp if clicks else None,
                co if clicks else None, 9, 11, 1.2, dwell, 1000.0, 2.0, norm, backend, True)
        torch.library.opcheck(_rasterize_op, args)


def test_torch_compile_fullgraph():
    b = random_batch([6, 2, 30], 4, 7, "cpu")

    def targets(rows, boxes, flips):
        return rasterize_traces(b["points"], b["times"], b["offsets"], rows, boxes, flips, output_size=7,
                                clicks=b["clicks"]) * 2.0

    compiled = torch.compile(targets, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(b["rows"], b["boxes"], b["flips"]), targets(b["rows"], b["boxes"], b["flips"]),
                               rtol=0, atol=0)


def test_out_size_is_the_former_name_of_output_size():
    """The old keyword still works (luab_fast/data, train/report, benchmarks), with a DeprecationWarning; an error
    names the argument as the caller wrote it; not both at once; torch.compile traces it without the warning."""
    inp = one_sample([(0.4, 0.5)])
    want = rasterize_traces(**inp, output_size=(5, 6))
    with pytest.warns(DeprecationWarning, match="out_size= is deprecated, pass output_size="):
        assert torch.equal(rasterize_traces(**inp, out_size=(5, 6)), want)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="out_size must be an integer in"):
        rasterize_traces(**inp, out_size=(0, 4))
    with pytest.raises(ValueError, match="output_size must be an integer in"):
        rasterize_traces(**inp, output_size=(0, 4))
    with pytest.raises(TypeError, match="both output_size= and its former name out_size="):
        rasterize_traces(**inp, output_size=7, out_size=7)
    compiled = torch.compile(lambda rows: rasterize_traces(**{**inp, "rows": rows}, out_size=(5, 6)), fullgraph=True,
                             backend="aot_eager")
    torch.testing.assert_close(compiled(inp["rows"]), want, rtol=0, atol=0)


def test_dwell_on_real_time_scales():
    """ImageNet-AB epoch-ms times (~1.64e12): the differences are taken in int64 before any float."""
    xy = np.array([(0.3, 0.3), (0.7, 0.7)], np.float32)
    t0 = 1_640_942_069_944
    inp = one_sample(xy.tolist(), [t0, t0 + 17])
    heat = rasterize_traces(**inp, output_size=10, weighting="dwell", normalize="none", backend="reference")[0]
    want = 0.017 * gauss(3, 3, 10, 10) + 1.0 * gauss(7, 7, 10, 10)
    torch.testing.assert_close(heat.double(), want, rtol=1e-5, atol=1e-9)
