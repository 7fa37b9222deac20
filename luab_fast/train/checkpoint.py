"""Atomic checkpoints: written to a temporary file in the same folder, fsynced, then renamed over the old one,
so a kill at any moment leaves either the previous checkpoint or the new one, never a torn file."""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch


def save_atomic(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> Optional[dict[str, Any]]:
    """The checkpoint at ``path``, None when there is none; tensors and plain Python only (``weights_only``: a
    checkpoint runs no code when loaded, and ``--pretrained-path`` can read this trainer's own)."""
    if not path.is_file():
        return None
    if path.stat().st_size == 0:
        raise ValueError(f"--resume: {path} is empty (0 bytes), not a checkpoint; delete it to start over")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn by something else than this code (saves are atomic), or not a checkpoint
        if "numpy" in str(exc):  # before aeb5ca3 the RNG state was pickled NumPy objects
            raise ValueError(f"--resume: {path} was written by an earlier luab_fast (its NumPy RNG state cannot be "
                             f"loaded with weights_only); start a new --out") from None
        raise ValueError(f"--resume: {path} is not a readable checkpoint ({describe(exc)}); delete it to start "
                         f"over") from None


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, without terminal colour codes, at most 200 characters."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # as tensors and numbers: weights_only loads them
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
