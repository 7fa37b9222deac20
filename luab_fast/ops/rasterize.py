"""Trace rasterisation: mouse traces and clicks → one attention heatmap per crop (LUAB byproducts, Han et al.,
"Neglected Free Lunch", ICCV 2023; the paper regresses one click, its traces are approximate attention).

``rasterize_traces(points[P,2], times[P], offsets[N+1], rows[B], boxes[B,4], flips[B], out_size=(h, w))``
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

Backends (the house rule, ``luab_fast/ops/_dispatch.py``): "reference" (PyTorch, for clarity: the dense [P, h, w] Gaussian
stack, summed in float64), "cpu" (C++, separable, OpenMP over the batch), "triton" (one launch: gather by
row + transform + splat as a matrix product + normalise). All agree within 1e-5 of each map's peak.
Bad input raises ValueError naming the argument; ``validate=False`` skips the value checks (one device sync
on a GPU) for store data, and the kernels still clamp every range they read.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

from .._ext import require_ext
from ._dispatch import pick_backend

__all__ = ["rasterize_traces", "rasterize_traces_reference"]

_WEIGHTINGS = ("uniform", "dwell")
_NORMALIZE = {"none": 0, "sum": 1, "max": 2}
DWELL_CAP_MS = 1000.0
TRUNCATE = 4.0  # the footprint's half-side, in sigmas
MAX_ARG = TRUNCATE ** 2 / 2  # its edge on the exponent r²/2σ² per axis


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
def _check_values(points, offsets, rows, boxes, click_points, click_offsets) -> None:
    """Data-dependent checks, read back in one device sync."""
    n = offsets.shape[0] - 1
    problems: list[tuple[str, torch.Tensor]] = [
        (f"offsets must start at 0 and end at P={points.shape[0]}",
         (offsets[0] != 0) | (offsets[-1] != points.shape[0]))]
    if rows.numel():
        problems.append((f"rows must lie in [0, {n})", ((rows < 0) | (rows >= n)).any()))
        safe = rows.clamp(0, max(n - 1, 0))
        problems.append(("offsets must be non-decreasing (offsets[row] <= offsets[row + 1] for every row used)",
                         (offsets[safe] > offsets[safe + 1]).any()))
        ok = torch.isfinite(boxes).all() & (boxes >= 0).all() & (boxes <= 1).all()
        ok = ok & (boxes[:, 0] < boxes[:, 2]).all() & (boxes[:, 1] < boxes[:, 3]).all()
        problems.append(("boxes must be finite (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1", ~ok))
        if click_points is not None:
            problems.append(("click offsets must be non-decreasing for every row used",
                             (click_offsets[safe] > click_offsets[safe + 1]).any()))
    if points.numel():
        problems.append(("points must be finite, got NaN or inf", ~torch.isfinite(points).all()))
    if click_points is not None:
        problems.append((f"click offsets must start at 0 and end at Q={click_points.shape[0]}",
                         (click_offsets[0] != 0) | (click_offsets[-1] != click_points.shape[0])))
        if click_points.numel():
            problems.append(("clicks must be finite, got NaN or inf", ~torch.isfinite(click_points).all()))
    failed = torch.stack([bad for _, bad in problems]).tolist()  # the one device sync
    for (message, _), bad in zip(problems, failed):
        if bad:
            raise ValueError(message)


def _check_static(points, times, offsets, rows, boxes, flips, clicks, sigma, weighting, click_mass, normalize,
                  dwell_cap_ms):
    def tensor(x, name, ndim, last=None):
        if not isinstance(x, torch.Tensor) or x.dim() != ndim or (last is not None and x.shape[-1] != last):
            want = f"[..., {last}]" if last else f"{ndim}-d"
            raise ValueError(f"{name} must be a {want} tensor, got {tuple(getattr(x, 'shape', ())) or type(x).__name__}")

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
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0 (output pixels), got {sigma!r}")
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {tuple(_NORMALIZE)}, got {normalize!r}")
    if not (isinstance(click_mass, (int, float)) and math.isfinite(click_mass) and click_mass >= 0):
        raise ValueError(f"click_mass must be a finite number >= 0, got {click_mass!r}")
    if not (isinstance(dwell_cap_ms, (int, float)) and math.isfinite(dwell_cap_ms) and dwell_cap_ms > 0):
        raise ValueError(f"dwell_cap_ms must be a finite number > 0, got {dwell_cap_ms!r}")


def _out_hw(out_size) -> tuple[int, int]:
    hw = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in hw):
        raise ValueError(f"out_size must be an int >= 1 or a pair (h, w) of them, got {out_size!r}")
    return hw  # type: ignore[return-value]


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
        click_points, click_offsets = click_points.detach().float().contiguous(), click_offsets.detach().long().contiguous()
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
        _check_values(points, offsets, rows, boxes, click_points, click_offsets)
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
                     boxes: torch.Tensor, flips: torch.Tensor, out_size: int | Sequence[int] = (56, 56),
                     sigma: float = 1.0, weighting: str = "uniform",
                     clicks: Optional[tuple[torch.Tensor, torch.Tensor]] = None, click_mass: float = 1.0,
                     normalize: str = "sum", backend: Optional[str] = None, *, dwell_cap_ms: float = DWELL_CAP_MS,
                     return_empty: bool = False, validate: bool = True):
    """Per-crop attention heatmaps from mouse traces (and clicks); see the module docstring.

    Args:
        points: Tensor[P, 2] float (x, y) normalised to the original image, the store's trace points.
        times: Tensor[P] int64 ms (read by ``weighting="dwell"``).
        offsets: Tensor[N + 1] int64: sample n owns points[offsets[n]:offsets[n + 1]].
        rows: Tensor[B] int64 samples of the batch. boxes: Tensor[B, 4] float crops. flips: Tensor[B] bool.
        out_size: h or (h, w) of the maps. sigma: Gaussian std in output pixels.
        weighting: "uniform" or "dwell". clicks: None or (click_points [Q, 2], click_offsets [N + 1]).
        click_mass: each click's mass. normalize: "sum", "max" or "none".
        backend: None (dispatch), "reference", "cpu" or "triton".
        dwell_cap_ms: the dwell cap. return_empty: also return empty [B] bool.
        validate: run the value checks (the C++ kernel always checks what it reads).

    Returns:
        float32 Tensor[B, h, w] (and empty [B] bool when ``return_empty``); B = 0 gives [0, h, w].
    """
    _check_static(points, times, offsets, rows, boxes, flips, clicks, sigma, weighting, click_mass, normalize,
                  dwell_cap_ms)
    h, w = _out_hw(out_size)
    cp, co = clicks if clicks is not None else (None, None)
    heat = _rasterize_op(points, times, offsets, rows, boxes, flips, cp, co, h, w, float(sigma),
                         weighting == "dwell", float(dwell_cap_ms), float(click_mass), _NORMALIZE[normalize],
                         pick_backend(points.device, backend), bool(validate))
    if return_empty:
        return heat, heat.flatten(1).amax(1) <= 0  # the masses are >= 0: a map is empty iff all zero
    return heat
