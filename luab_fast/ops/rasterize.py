"""Trace rasterisation: mouse traces and clicks → one attention heatmap per crop (LUAB byproducts, Han et al.,
"Neglected Free Lunch", ICCV 2023; the paper regresses one click, its traces are approximate attention).

``rasterize_traces(points[P,2], times[P], offsets[N+1], rows[B], boxes[B,4], flips[B], output_size=(h, w))``
→ ``heatmaps[B, h, w]`` float32. The ragged inputs are a whole store's (``ByproductTensors.raster_inputs()``):
sample n owns ``points[offsets[n]:offsets[n+1]]``; ``rows`` picks the batch's samples.

Per point (docs/architecture.md conventions): ``u = (x − x0)/(x1 − x0)``, ``v = (y − y0)/(y1 − y0)``,
``u ↦ 1 − u`` when flipped; it splats a normalised isotropic Gaussian ``exp(−r²/2σ²)/(2πσ²)`` (``sigma`` in
output pixels) centred at ``(u·w, v·h)``, evaluated at pixel centres ``(j + ½, i + ½)`` over its footprint:
the square of pixels within 4σ of it along x and along y (it holds 99.99% of the mass; the test is
``d·d·(1/2σ²) ≤ 8`` per axis in float32, the same operations in every backend). A point outside the crop
contributes the part of its footprint that falls inside. A point's mass:
  ``"uniform"``  1;
  ``"dwell"``    the time the cursor rested there, in seconds: ``min(t[i+1] − t[i], dwell_cap_ms)/1000``, the
                 next point being the sample's next one. A sample's last point, or one whose next point is
                 earlier (the next worker's trace starts), gets the cap: the cursor stayed there until the
                 click. Gaps above the cap (a pause, or the hours between two workers' traces) are capped.
                 Default cap 1,000 ms: ImageNet-AB's mean hover time per image is ~750 ms.
Clicks (``clicks=(click_points[Q,2], click_offsets[N+1])``, packed like the points) add ``click_mass`` each,
in the same unit as a point's mass (1 point for "uniform", seconds for "dwell").

``normalize``: "sum" (each map sums to 1), "max" (peak 1) or "none". A map with no mass (no points, or all
far outside the crop) stays all zeros — the empty report: ``return_empty=True`` also returns ``empty[B]``
bool, and ``luab_loss`` masks such maps by their zero sum.

Backends (the house rule, ``luab_fast/ops/_dispatch.py``): "reference" (PyTorch, for clarity: the dense [P, h, w]
Gaussian
stack, summed in float64), "cpu" (C++, separable, OpenMP over the batch), "triton" (one launch: gather by
row + transform + splat as a matrix product + normalise). All agree within 1e-5 of each map's peak.
Bad input raises ValueError naming the argument, what was expected and what came: ``sigma`` must keep 2σ²
a normal float32 (about 1e-19 to 1e19 pixels; a huge σ gives the uniform map), a result beyond 2**31 - 1
values is refused before anything is allocated, tensors that require grad are refused (no backward), and
the values are checked for the rows used only, as the C++ kernel does. ``validate=False`` skips the value
checks (one device sync on a GPU) of "triton" for store data, and its kernel still clamps every range it
reads; "reference" and "cpu" check regardless.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import numpy as np
import torch

from .._ext import require_ext
from ._checks import Problem, box_problem, first_bad, output_hw, raise_first, renamed_keyword, rows_problem
from ._dispatch import pick_backend

__all__ = ["rasterize_traces", "rasterize_traces_reference"]

_WEIGHTINGS = ("uniform", "dwell")
_NORMALIZE = {"none": 0, "sum": 1, "max": 2}
DWELL_CAP_MS = 1000.0
OUTPUT_SIZE = (56, 56)
TRUNCATE = 4.0  # the footprint's half-side, in sigmas
STACK_VALUES = 2 ** 24  # the reference splats at most this many [point, y, x] values at once (128 MiB of float64)
MAX_ARG = TRUNCATE ** 2 / 2  # its edge on the exponent r²/2σ² per axis
FLT_MAX, FLT_MIN, FLT_TRUE_MIN = 3.4028234663852886e38, 1.1754943508222875e-38, 1.401298464324817e-45  # float32


# ---------------------------------------------------------------------------------------------- reference
def _point_mass(times: torch.Tensor, dwell: bool, dwell_cap_ms: float) -> torch.Tensor:
    """float64 [n] mass of one sample's points: 1 each, or their capped dwell in seconds."""
    n = times.shape[0]
    if not dwell:
        return torch.ones(n, dtype=torch.float64, device=times.device)
    dt = torch.full((n,), -1.0, dtype=torch.float64, device=times.device)  # the last point: no next one
    if n > 1:
        dt[:-1] = (times[1:] - times[:-1]).to(torch.float64)
    dwell_ms = torch.where(dt >= 0, dt.clamp(max=dwell_cap_ms), torch.full_like(dt, dwell_cap_ms))
    return dwell_ms / 1000.0


def _splat(xy: torch.Tensor, mass: torch.Tensor, box: torch.Tensor, flip: bool, h: int, w: int,
           sigma: float) -> torch.Tensor:
    """float64 [h, w]: Σ_p mass_p · N((j + ½, i + ½); (px_p, py_p), σ²) over one sample's points."""
    x0, y0, x1, y1 = box.unbind()
    u = (xy[:, 0] - x0) / (x1 - x0)  # float32, the project's crop convention
    v = (xy[:, 1] - y0) / (y1 - y0)
    if flip:
        u = 1.0 - u
    px, py = u * w, v * h
    two_s2, inv_two_s2 = _gaussian_constants(sigma)
    cx = torch.arange(w, dtype=torch.float32, device=xy.device) + 0.5
    cy = torch.arange(h, dtype=torch.float32, device=xy.device) + 0.5
    step = max(1, STACK_VALUES // (h * w))
    if px.shape[0] > step:  # many points on a big map: bounded memory, summed a chunk at a time
        return sum(_splat_at(px[i:i + step], py[i:i + step], mass[i:i + step], cx, cy, two_s2, inv_two_s2)
                   for i in range(0, px.shape[0], step))
    return _splat_at(px, py, mass, cx, cy, two_s2, inv_two_s2)


def _splat_at(px, py, mass, cx, cy, two_s2, inv_two_s2) -> torch.Tensor:
    """float64 [h, w]: the points at output pixels (px, py) splatted at the pixel centres (cx, cy)."""
    dx = cx[None, None, :] - px[:, None, None]  # [n, 1, w]
    dy = cy[None, :, None] - py[:, None, None]  # [n, h, 1]
    ax, ay = dx * dx * inv_two_s2, dy * dy * inv_two_s2  # r² / 2σ² per axis, float32 (the footprint test)
    inside = (ax <= MAX_ARG) & (ay <= MAX_ARG)
    gauss = torch.exp(-(ax.double() + ay.double())) / (math.pi * two_s2)  # [n, h, w]
    return (mass[:, None, None] * torch.where(inside, gauss, 0.0)).sum(0)


def _gaussian_constants(sigma: float) -> tuple[float, float]:
    """(2σ², 1/(2σ²)) in float32, the values every backend uses."""
    two_s2 = np.float32(2.0) * np.float32(sigma) * np.float32(sigma)
    return float(two_s2), float(np.float32(1.0) / two_s2)


def rasterize_traces_reference(points, times, offsets, rows, boxes, flips, h, w, sigma=1.0, dwell=False,
                               dwell_cap_ms=DWELL_CAP_MS, click_points=None, click_offsets=None, click_mass=1.0,
                               normalize="sum") -> torch.Tensor:
    """The op's definition, one sample at a time (expects validated inputs)."""
    out = torch.zeros(rows.shape[0], h, w, dtype=torch.float32, device=points.device)
    for b in range(rows.shape[0]):
        r = int(rows[b])
        s, e = int(offsets[r]), int(offsets[r + 1])
        heat = _splat(points[s:e].float(), _point_mass(times[s:e], dwell, dwell_cap_ms), boxes[b].float(),
                      bool(flips[b]), h, w, sigma)
        if click_points is not None:
            cs, ce = int(click_offsets[r]), int(click_offsets[r + 1])
            mass = torch.full((ce - cs,), float(click_mass), dtype=torch.float64, device=points.device)
            heat = heat + _splat(click_points[cs:ce].float(), mass, boxes[b].float(), bool(flips[b]), h, w, sigma)
        denom = heat.sum() if normalize == "sum" else heat.max() if normalize == "max" else None
        if denom is not None and float(denom) > 0:
            heat = heat / denom
        out[b] = heat.float()
    return out


# ----------------------------------------------------------------------------------------------- checks
def _value_problems(points, offsets, rows, boxes, click_points, click_offsets) -> list[Problem]:
    """The data-dependent checks, for ``raise_first`` (one device sync)."""
    n, P = offsets.shape[0] - 1, points.shape[0]
    problems = [Problem(f"offsets must start at 0 and end at P={P}", (offsets[0] != 0) | (offsets[-1] != P),
                        lambda: f", got {int(offsets[0])} ... {int(offsets[-1])}")]
    if rows.numel():
        problems.append(rows_problem(rows, n, "the samples of offsets"))
        problems.append(box_problem(boxes))
        if n > 0:  # (with no samples every row is out of range, reported above)
            safe = rows.clamp(0, n - 1)
            ragged = [("offsets", offsets, "P", points, "points")]
            if click_points is not None:
                ragged.append(("click offsets", click_offsets, "Q", click_points, "clicks"))
            for name, off, size, values, what in ragged:
                end = values.shape[0]
                lo, hi = off[safe], off[safe + 1]
                bad = (lo > hi) | (lo < 0) | (hi > end)  # a slice beyond the points would drop them silently
                problems.append(Problem(f"{name} must be non-decreasing within [0, {size}={end}] (offsets[row] <= "
                                        f"offsets[row + 1] for every row used)", bad.any(),
                                        lambda lo=lo, hi=hi, bad=bad: first_bad("rows", rows, bad)
                                        + f" with {name} {int(lo[bad][0])} ... {int(hi[bad][0])}"))
                # only the rows used, as the C++ kernel: a bad point elsewhere in the store is not this batch's
                nonfinite = _count_in_rows(~torch.isfinite(values).all(1), lo.clamp(0, end), hi.clamp(0, end)) > 0
                problems.append(Problem(f"{what} must be finite (as float32)", nonfinite.any(),
                                        lambda nonfinite=nonfinite, what=what: first_bad(
                                            "rows", rows, nonfinite, f", got NaN or inf among the {what} of ")))
    if click_points is not None:
        Q = click_points.shape[0]
        problems.append(Problem(f"click offsets must start at 0 and end at Q={Q}",
                                (click_offsets[0] != 0) | (click_offsets[-1] != Q),
                                lambda: f", got {int(click_offsets[0])} ... {int(click_offsets[-1])}"))
    return problems


def _count_in_rows(flag: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """[B] how many of ``flag[lo[b]:hi[b]]`` are set (a prefix sum: no ragged gather, no sync)."""
    cum = torch.cat([flag.new_zeros(1, dtype=torch.int64), flag.long().cumsum(0)])
    return cum[hi] - cum[lo]


def _check_static(points, times, offsets, rows, boxes, flips, clicks, sigma, weighting, click_mass, normalize,
                  dwell_cap_ms):
    def tensor(x, name, ndim, last=None):
        if not isinstance(x, torch.Tensor) or x.dim() != ndim or (last is not None and x.shape[-1] != last):
            want = f"[..., {last}]" if last else f"{ndim}-d"
            got = tuple(getattr(x, 'shape', ())) or type(x).__name__
            raise ValueError(f"{name} must be a {want} tensor, got {got}")

    tensor(points, "points", 2, 2)
    tensor(times, "times", 1)
    tensor(offsets, "offsets", 1)
    tensor(rows, "rows", 1)
    tensor(boxes, "boxes", 2, 4)
    tensor(flips, "flips", 1)
    if not points.is_floating_point():
        raise ValueError(f"points must be float, got {points.dtype}")
    if times.shape[0] != points.shape[0] or times.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"times must be int64 [P={points.shape[0]}] (ms), got {times.dtype} {tuple(times.shape)}")
    if offsets.shape[0] < 1 or offsets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"offsets must be int64 [N + 1], got {offsets.dtype} {tuple(offsets.shape)}")
    if rows.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"rows must be int64 [B], got {rows.dtype}")
    B = rows.shape[0]
    if boxes.shape[0] != B or not boxes.is_floating_point():
        raise ValueError(f"boxes must be float [B={B}, 4], got {boxes.dtype} {tuple(boxes.shape)}")
    if flips.shape[0] != B or flips.dtype != torch.bool:
        raise ValueError(f"flips must be bool [B={B}], got {flips.dtype} {tuple(flips.shape)}")
    tensors = [points, times, offsets, rows, boxes, flips]
    if clicks is not None:
        if not (isinstance(clicks, (tuple, list)) and len(clicks) == 2):
            raise ValueError("clicks must be None or a pair (click_points [Q, 2], click_offsets [N + 1])")
        tensor(clicks[0], "clicks[0] (click points)", 2, 2)
        tensor(clicks[1], "clicks[1] (click offsets)", 1)
        if not clicks[0].is_floating_point() or clicks[1].dtype not in (torch.int64, torch.int32) or \
                clicks[1].shape != offsets.shape:
            raise ValueError(f"clicks must be (float [Q, 2], int64 [N + 1={offsets.shape[0]}]), got "
                             f"({clicks[0].dtype}, {clicks[1].dtype} {tuple(clicks[1].shape)})")
        tensors += list(clicks)
    if len({t.device for t in tensors}) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted({str(t.device) for t in tensors})}")
    _check_number("sigma", sigma, positive=True)
    if not FLT_MIN <= 2.0 * float(sigma) * float(sigma) <= FLT_MAX:
        # every backend computes the Gaussian from float32 2σ² and 1/(2σ²): beyond, maps come out 0 or NaN
        raise ValueError(f"sigma must be a number > 0 whose 2·sigma² is a normal float32 (about 1e-19 to 1e19 "
                         f"output pixels), got {sigma!r}")
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {tuple(_NORMALIZE)}, got {normalize!r}")
    _check_number("click_mass", click_mass, positive=False)
    _check_number("dwell_cap_ms", dwell_cap_ms, positive=True)
    if torch.is_grad_enabled():
        for name, t in (("points", points), ("boxes", boxes), ("clicks[0] (click points)", clicks and clicks[0])):
            if isinstance(t, torch.Tensor) and t.requires_grad:  # the op has no backward: fail here, not later
                raise ValueError(f"{name} must not require grad: rasterize_traces has no gradient (traces and "
                                 f"crop boxes are data); pass it detached")


def _check_number(name: str, value, positive: bool) -> None:
    """A real number (not a bool), finite and > 0 (``positive``) or >= 0 as the kernels' float32 holds it."""
    v = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not ((FLT_TRUE_MIN if positive else 0.0) <= v <= FLT_MAX):  # (plain floats: torch.compile traces this)
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0 as a float32 (the kernels' "
                         f"type: at most 3.4e38{', at least 1.4e-45' if positive else ''}), got {value!r}")


# ------------------------------------------------------------------------------------- torch.library op
@torch.library.custom_op("luab_fast::rasterize_traces", mutates_args=())
def _rasterize_op(points: torch.Tensor, times: torch.Tensor, offsets: torch.Tensor, rows: torch.Tensor,
                  boxes: torch.Tensor, flips: torch.Tensor, click_points: Optional[torch.Tensor],
                  click_offsets: Optional[torch.Tensor], h: int, w: int, sigma: float, dwell: bool,
                  dwell_cap_ms: float, click_mass: float, normalize: int, backend: str,
                  validate: bool) -> torch.Tensor:
    points, boxes = points.detach().float().contiguous(), boxes.detach().float().contiguous()
    times, offsets, rows = (t.detach().long().contiguous() for t in (times, offsets, rows))
    if click_points is not None:
        click_points = click_points.detach().float().contiguous()
        click_offsets = click_offsets.detach().long().contiguous()
    if backend == "cpu":
        ext = require_ext("rasterize_traces(backend='cpu')")
        cp = None if click_points is None else click_points.numpy()
        co = None if click_offsets is None else click_offsets.numpy()
        # the kernel validates what it reads and raises ValueError naming it
        return torch.from_numpy(ext.ops.rasterize_traces(
            points.numpy(), times.numpy(), offsets.numpy(), rows.numpy(), boxes.numpy(),
            flips.detach().to(torch.uint8).contiguous().numpy(), h, w, sigma, dwell, dwell_cap_ms, cp, co,
            click_mass, normalize))
    if validate or backend == "reference":
        raise_first(_value_problems(points, offsets, rows, boxes, click_points, click_offsets))
    if backend == "triton":
        from ..kernels.rasterize import rasterize_triton

        return rasterize_triton(points, times, offsets, rows, boxes, flips.detach().to(torch.uint8).contiguous(),
                                click_points, click_offsets, h, w, sigma, dwell, dwell_cap_ms, click_mass, normalize)
    name = {v: k for k, v in _NORMALIZE.items()}[normalize]
    return rasterize_traces_reference(points, times, offsets, rows, boxes, flips, h, w, sigma, dwell, dwell_cap_ms,
                                      click_points, click_offsets, click_mass, name)


@_rasterize_op.register_fake
def _(points, times, offsets, rows, boxes, flips, click_points, click_offsets, h, w, sigma, dwell, dwell_cap_ms,
      click_mass, normalize, backend, validate):
    return points.new_empty((rows.shape[0], h, w), dtype=torch.float32)


# ------------------------------------------------------------------------------------------- public API
def rasterize_traces(points: torch.Tensor, times: torch.Tensor, offsets: torch.Tensor, rows: torch.Tensor,
                     boxes: torch.Tensor, flips: torch.Tensor, output_size: int | Sequence[int] = OUTPUT_SIZE,
                     sigma: float = 1.0, weighting: str = "uniform",
                     clicks: Optional[tuple[torch.Tensor, torch.Tensor]] = None, click_mass: float = 1.0,
                     normalize: str = "sum", backend: Optional[str] = None, *, dwell_cap_ms: float = DWELL_CAP_MS,
                     return_empty: bool = False, validate: bool = True,
                     out_size: Optional[int | Sequence[int]] = None):
    """Per-crop attention heatmaps from mouse traces (and clicks); see the module docstring.

    Args:
        points: Tensor[P, 2] float (x, y) normalised to the original image, the store's trace points.
        times: Tensor[P] int64 ms (read by ``weighting="dwell"``).
        offsets: Tensor[N + 1] int64: sample n owns points[offsets[n]:offsets[n + 1]].
        rows: Tensor[B] int64 samples of the batch. boxes: Tensor[B, 4] float crops. flips: Tensor[B] bool.
        output_size: h or (h, w) of the maps. sigma: Gaussian std in output pixels.
        weighting: "uniform" or "dwell". clicks: None or (click_points [Q, 2], click_offsets [N + 1]).
        click_mass: each click's mass. normalize: "sum", "max" or "none".
        backend: None (dispatch), "reference", "cpu" or "triton".
        dwell_cap_ms: the dwell cap. return_empty: also return empty [B] bool.
        validate: run the value checks (the C++ kernel always checks what it reads).
        out_size: the former name of ``output_size`` (deprecated: DeprecationWarning; errors name it as passed).

    Returns:
        float32 Tensor[B, h, w] (and empty [B] bool when ``return_empty``); B = 0 gives [0, h, w].
    """
    _check_static(points, times, offsets, rows, boxes, flips, clicks, sigma, weighting, click_mass, normalize,
                  dwell_cap_ms)
    size_name, size = renamed_keyword("rasterize_traces", "output_size", output_size, OUTPUT_SIZE, "out_size", out_size)
    h, w = output_hw(size_name, size, rows.shape[0], "[B, h, w] float32 result")
    cp, co = clicks if clicks is not None else (None, None)
    heat = _rasterize_op(points, times, offsets, rows, boxes, flips, cp, co, h, w, float(sigma),
                         weighting == "dwell", float(dwell_cap_ms), float(click_mass), _NORMALIZE[normalize],
                         pick_backend(points.device, backend), bool(validate))
    if return_empty:
        return heat, heat.flatten(1).amax(1) <= 0  # the masses are >= 0: a map is empty iff all zero
    return heat
