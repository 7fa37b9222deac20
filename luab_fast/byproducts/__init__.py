"""Annotation byproducts (LUAB, "Neglected Free Lunch", ICCV 2023): ImageNet-AB / COCO-AB readers, the
packed memory-mapped store, and per-crop targets."""

from .._store.errors import StoreError
from .records import CocoAction, CocoSample, ImageNetRecord, ImageNetSample, ReadProblem
from .store import ByproductStore, write_imagenet_store

__all__ = ["ByproductStore", "CocoAction", "CocoSample", "ImageNetRecord", "ImageNetSample", "ReadProblem",
           "StoreError", "write_imagenet_store"]

from .coco_ab import read_coco_ab  # noqa: E402
from .imagenet_ab import read_imagenet_ab  # noqa: E402
from .store_coco import CocoByproductStore, write_coco_store  # noqa: E402

__all__ += ["CocoByproductStore", "read_coco_ab", "read_imagenet_ab", "write_coco_store"]
