"""The house dispatch rule (docs/architecture.md), shared by the ops that have all three backends:
CUDA tensor and Triton available → "triton"; CPU tensor and ``_C`` loaded → "cpu"; otherwise "reference".
A fallback changes speed, never the answer."""

from __future__ import annotations

from typing import Optional

import torch

from .._ext import HAS_EXT
from ..kernels import HAS_TRITON, triton_runs_on

BACKENDS = ("reference", "cpu", "triton")


def pick_backend(device: torch.device, backend: Optional[str]) -> str:
    """The rule's choice for ``device``, or the forced ``backend`` after checking it can run there."""
    if backend is None:
        if device.type == "cuda" and HAS_TRITON:
            return "triton"
        return "cpu" if device.type == "cpu" and HAS_EXT else "reference"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got device {device}")
    if backend == "triton" and not triton_runs_on(device.type):
        raise ValueError(f"backend='triton' needs CUDA tensors and triton (CPU tensors only under "
                         f"TRITON_INTERPRET=1), got device {device}, triton {'present' if HAS_TRITON else 'absent'}")
    return backend
