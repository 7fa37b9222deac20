"""Public ops, one file per op: pure-PyTorch reference, dispatch, torch.library registration."""

from .label_pool import label_pool, label_pool_reference, label_pool_targets
from .relabel_cross_entropy import relabel_cross_entropy, relabel_cross_entropy_reference

__all__ = ["label_pool", "label_pool_reference", "label_pool_targets", "relabel_cross_entropy",
           "relabel_cross_entropy_reference"]
