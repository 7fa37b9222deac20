"""Atomic checkpoints: written to a temporary file in the same folder (named with the writer's pid, so the next
save removes one a killed run left), fsynced, then renamed over the old one, so a kill at any moment leaves either
the previous checkpoint or the new one, never a torn file; a failed write (a full disk) leaves the previous one."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .. import _atomic
from .._cli import DataError

# what a checkpoint of this trainer holds (Trainer.save); ``run`` was added later and is optional
KEYS = ("model", "opt", "sched", "state", "rng")


class _Sink(io.RawIOBase):
    """A file that remembers the OSError a write raised: ``torch.save`` turns it into a RuntimeError
    ("unexpected pos ...") that no longer says the disk is full."""

    def __init__(self, f) -> None:
        super().__init__()
        self.f, self.error = f, None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        try:
            return self.f.write(b)
        except OSError as exc:
            self.error = exc
            raise


def save_atomic(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _atomic.atomic_path(path, fsync=True) as tmp, open(tmp, "wb") as f:
            sink = _Sink(f)
            try:
                torch.save(state, sink)
            except RuntimeError:
                if sink.error is None:
                    raise
                raise sink.error from None
    except OSError as exc:  # named by the checkpoint, not by the temporary that is gone
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def copy_atomic(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst`` as save_atomic writes: a kill leaves the previous ``dst`` or the new one."""
    import shutil

    try:
        with _atomic.atomic_path(dst, fsync=True) as tmp:
            shutil.copyfile(src, tmp)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(dst)) from None


def load(path: Path) -> Optional[dict[str, Any]]:
    """The checkpoint at ``path``, None when there is none; tensors and plain Python only (``weights_only``: a
    checkpoint runs no code when loaded, and ``--pretrained-path`` can read this trainer's own). A file that is
    not one of this trainer's checkpoints is a DataError saying what it holds."""
    if not path.is_file():
        if path.exists():
            raise DataError(f"--resume: {path} is a folder, expected the run's checkpoint file; remove it or use a "
                            f"new --out")
        return None
    if path.stat().st_size == 0:
        raise DataError(f"--resume: {path} is empty (0 bytes), not a checkpoint; delete it to start over")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # torn by something else than this code (saves are atomic), or not a checkpoint
        if "numpy" in str(exc):  # before aeb5ca3 the RNG state was pickled NumPy objects
            raise DataError(f"--resume: {path} was written by an earlier luab_fast (its NumPy RNG state cannot be "
                            f"loaded with weights_only); start a new --out") from None
        raise DataError(f"--resume: {path} is not a readable checkpoint ({describe(exc)}); delete it to start "
                        f"over") from None
    problem = structure_problem(saved)
    if problem:
        raise DataError(f"--resume: {path} holds {problem}, expected a checkpoint of python -m luab_fast.train "
                        f"(a dict of {', '.join(KEYS)}); use a new --out, or delete it to start over")
    return saved


def what_it_holds(obj: Any) -> str:
    """A few words on what a loaded file holds, for a message."""
    if isinstance(obj, dict):
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return f"a state dict of {len(obj)} tensors (as torch.save(model.state_dict()) writes)"
        keys = [str(k) for k in list(obj)[:6]]
        return f"a dict of {', '.join(keys) or 'nothing'}" + (", ..." if len(obj) > 6 else "")
    if isinstance(obj, torch.Tensor):
        return f"a Tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


def structure_problem(saved: Any) -> Optional[str]:
    """None when ``saved`` has the structure Trainer.save writes, else what it holds instead."""
    if not isinstance(saved, dict) or not all(k in saved for k in KEYS):
        return what_it_holds(saved)
    kinds = {"model": dict, "opt": dict, "sched": dict, "state": dict, "rng": dict}
    wrong = [f"{k} as a {type(saved[k]).__name__}" for k, t in kinds.items() if not isinstance(saved[k], t)]
    if "run" in saved and not isinstance(saved["run"], dict):
        wrong.append(f"run as a {type(saved['run']).__name__}")
    if not wrong and not all(isinstance(v, torch.Tensor) for v in saved["model"].values()):
        wrong.append("a model entry that is not a tensor")
    return f"a dict with {', '.join(wrong)}" if wrong else None


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
