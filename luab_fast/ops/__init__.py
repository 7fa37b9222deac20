"""Public ops, one file per op: pure-PyTorch reference, dispatch, torch.library registration."""

from .label_pool import label_pool, label_pool_reference, label_pool_targets
from .rasterize import rasterize_traces, rasterize_traces_reference
from .relabel_cross_entropy import relabel_cross_entropy, relabel_cross_entropy_reference

__all__ = ["label_pool", "label_pool_reference", "label_pool_targets", "rasterize_traces", "rasterize_traces_reference",
           "relabel_cross_entropy",
           "relabel_cross_entropy_reference"]
