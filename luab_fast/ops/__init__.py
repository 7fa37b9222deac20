"""Public ops, one file per op: pure-PyTorch reference, dispatch, torch.library registration."""

from .label_pool import label_pool, label_pool_reference, label_pool_targets

__all__ = ["label_pool", "label_pool_reference", "label_pool_targets"]
