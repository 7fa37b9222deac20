"""Public ops, one file per op: pure-PyTorch reference, dispatch, torch.library registration."""

from .label_pool import label_pool, label_pool_reference, label_pool_targets
from .luab_loss import LUABLoss, luab_loss, luab_loss_reference
from .rasterize import rasterize_traces, rasterize_traces_reference
from .relabel_cross_entropy import relabel_cross_entropy, relabel_cross_entropy_reference

__all__ = ["LUABLoss", "label_pool", "label_pool_reference", "label_pool_targets", "luab_loss", "luab_loss_reference",
           "rasterize_traces", "rasterize_traces_reference", "relabel_cross_entropy", "relabel_cross_entropy_reference"]
