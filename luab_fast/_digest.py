"""The sha256 of a file's bytes, read in 1 MiB blocks: what annotation projects key their ingested exports and
creation files by, and what evaluation results name a checkpoint by."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
