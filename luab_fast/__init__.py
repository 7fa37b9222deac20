"""luab_fast: train image classifiers on everything an annotation process leaves behind.

Compiled hot paths (C++ with OpenMP, Triton on the GPU) behind a PyTorch/pandas API:

- ``luab_fast.aggregate``: EM label aggregation (majority vote, Dawid–Skene, one-coin, the efficient-
  annotation paper's Bayes aggregator), crowd-kit-compatible, orders of magnitude faster.
- ``luab_fast.crowdkit``: crowd-kit's classifiers to the letter of its API on those engines;
  ``luab_fast.patch_crowdkit()`` puts them under crowd-kit's own names.
"""

from ._ext import HAS_EXT, LuabFastWarning

__version__ = "0.1.0"
__all__ = ["HAS_EXT", "LuabFastWarning", "__version__", "patch_crowdkit", "unpatch_crowdkit"]


def __getattr__(name: str):  # PEP 562: patch_crowdkit / unpatch_crowdkit load pandas and crowd-kit only when used
    if name in ("patch_crowdkit", "unpatch_crowdkit"):
        from .crowdkit import _patch

        return getattr(_patch, name)
    raise AttributeError(f"module 'luab_fast' has no attribute {name!r}")
