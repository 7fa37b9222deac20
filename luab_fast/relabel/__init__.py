"""ReLabel (Yun et al., CVPR 2021) label maps: pack the release's per-image ``.pt`` files into one
memory-mapped store, gather maps by row on the CPU or the GPU, and generate maps for any dataset."""

from .._store.errors import StoreError
from ..byproducts.records import ReadProblem
from .store import LabelMapStore, PackResult, image_stem, pack_label_maps

__all__ = ["LabelMapStore", "PackResult", "ReadProblem", "StoreError", "image_stem", "pack_label_maps"]
