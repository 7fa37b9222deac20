"""Triton kernels, one file per op. This package (and triton) is imported with ``luab_fast.ops``; each kernel
module is imported on first use. Never raises at import.

``HAS_TRITON``: triton imports. ``INTERPRET``: ``TRITON_INTERPRET=1`` was set before triton was imported,
so kernels run on CPU tensors through Triton's numpy interpreter (how CI tests them).
"""

from __future__ import annotations

import os

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except Exception:  # a missing or broken triton only disables the "triton" backend
    HAS_TRITON = False

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_runs_on(device_type: str) -> bool:
    """Whether the "triton" backend can run on tensors of ``device_type`` here."""
    return HAS_TRITON and (device_type == "cuda" or (device_type == "cpu" and INTERPRET))
