"""Datasets and loaders: the built-in demo dataset (``make_demo`` / ``ensure_demo``) and ``build_loader``
(DALI or torchvision decode, crop windows reported, per-crop targets from the stores)."""

from .demo import DemoPaths, ensure_demo, make_demo, pack_demo_byproducts
from .loader import Loader, build_loader

__all__ = ["DemoPaths", "Loader", "build_loader", "ensure_demo", "make_demo", "pack_demo_byproducts"]
