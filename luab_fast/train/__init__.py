"""``python -m luab_fast.train``: the compiled multitask trainer (labels + annotation byproducts)."""

from .config import TrainConfig, load_config
from .model import LUABModel

__all__ = ["LUABModel", "TrainConfig", "load_config"]
