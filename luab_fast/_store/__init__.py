"""The packed store every store kind is built on (byproducts, COCO-AB, ReLabel label maps): the on-disk format
(``format``: manifest, atomic write, read, checksums), how arrays fit together (``layout``), the id hash table
(``index``), the one error (``errors``), the base class (``base``) and what the two store commands share
(``cli``). Neutral: it imports no store kind (``format`` only names each kind's pack command for its messages)."""

from .errors import StoreError, damaged

__all__ = ["StoreError", "damaged"]
