"""The house dispatch rule (docs/architecture.md), one picker for every op:
CUDA tensor, Triton available and the input fits its kernel → "triton"; CPU tensor and ``_C`` loaded (for an
op with a "cpu" backend) → "cpu"; otherwise "reference". A fallback changes speed, never the answer."""

from __future__ import annotations

from typing import Optional

import torch

from .._ext import HAS_EXT
from ..kernels import HAS_TRITON, triton_runs_on

BACKENDS = ("reference", "cpu", "triton")


def check_backend_name(backend: Optional[str], backends: tuple[str, ...] = BACKENDS) -> None:
    """``backend`` must be None or one of ``backends`` (the op's)."""
    if backend is not None and backend not in backends:
        raise ValueError(f"backend must be one of {backends} or None, got {backend!r}")


def pick_backend(device: torch.device, backend: Optional[str], *, backends: tuple[str, ...] = BACKENDS,
                 fits: bool = True, misfit: str = "") -> str:
    """The rule's choice for ``device``, or the forced ``backend`` after checking it can run there.

    ``backends``: the op's (``luab_loss`` has no "cpu"). ``fits``: whether the input suits the Triton kernel
    (``luab_loss``: a heat map of at most MAX_HEAT_CELLS cells); when it does not, the rule picks another
    backend and forcing "triton" raises ``ValueError(misfit)``.
    """
    if backend is None:
        if device.type == "cuda" and HAS_TRITON and fits:
            return "triton"
        return "cpu" if device.type == "cpu" and HAS_EXT and "cpu" in backends else "reference"
    check_backend_name(backend, backends)
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got device {device}")
    if backend == "triton" and not triton_runs_on(device.type):
        raise ValueError(f"backend='triton' needs CUDA tensors and triton (CPU tensors only under "
                         f"TRITON_INTERPRET=1), got device {device}, triton {'present' if HAS_TRITON else 'absent'}")
    if backend == "triton" and not fits:
        raise ValueError(misfit)
    return backend
