"""luab_fast: train image classifiers on everything an annotation process leaves behind.

Compiled hot paths (C++ with OpenMP, Triton on the GPU) behind a PyTorch/pandas API:

- ``luab_fast.aggregate``: EM label aggregation (majority vote, Dawid–Skene, one-coin, the efficient-
  annotation paper's Bayes aggregator), crowd-kit-compatible, orders of magnitude faster.
"""

from ._ext import HAS_EXT, LuabFastWarning

__version__ = "0.1.0"
__all__ = ["HAS_EXT", "LuabFastWarning", "__version__"]
