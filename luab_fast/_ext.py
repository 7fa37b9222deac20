"""Loads the compiled core ``luab_fast._C`` exactly once.

``import luab_fast`` never fails because the build failed: ``HAS_EXT`` is False, one warning says how to
fix it, and only calling a compiled function raises (``require_ext``).
"""

from __future__ import annotations

import warnings
from types import ModuleType


class LuabFastWarning(UserWarning):
    """Warnings issued by luab_fast itself (tests turn them into errors)."""


_BUILD_FIX = (
    "rebuild it from the repository root with `pip install -e .` (needs a C++17 compiler, CMake >= 3.18 "
    "and OpenMP; set LUAB_FAST_DEBUG=1 for a debug build)"
)

_C: ModuleType | None
try:
    from . import _C  # type: ignore[attr-defined]

    HAS_EXT = True
    _IMPORT_ERROR: BaseException | None = None
except ImportError as exc:  # pragma: no cover - exercised by test_ext with a broken path
    _C = None
    HAS_EXT = False
    _IMPORT_ERROR = exc
    warnings.warn(
        f"luab_fast._C could not be loaded ({exc}); compiled functions are unavailable: {_BUILD_FIX}",
        LuabFastWarning,
        stacklevel=2,
    )


def require_ext(what: str) -> ModuleType:
    """Returns ``_C`` or raises an actionable RuntimeError naming the function that needed it."""
    if _C is None:
        raise RuntimeError(f"{what} needs the compiled extension luab_fast._C, which failed to load "
                           f"({_IMPORT_ERROR}): {_BUILD_FIX}")
    return _C
