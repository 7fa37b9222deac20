"""The packed, memory-mapped ReLabel label-map store: every image's top-K label map, indexed by row and id.

>>> pack_label_maps("relabel_imagenet/", "relabel.store", score_dtype="float16")
>>> store = LabelMapStore.open("relabel.store").to("cuda")   # copies the arrays to the GPU once
>>> rows = store.rows(["n01440764_10026", "n01440764_10027"])
>>> scores, indices = store.gather(rows)    # Tensor[B, K, S, S] float32, Tensor[B, K, S, S] int64

Arrays: ``scores`` [N, K, S, S] float32 or float16 (raw teacher scores, rank-major as released), ``indices``
[N, K, S, S] int16 (class ids), ``ids`` [N] fixed-width bytes (file stems), ``index`` (an on-disk hash table
over ``ids``), ``wnids`` [W] and ``label`` [N] int32 (the ``<wnid>/`` folder of each row).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .._cli import UsageError
from .._store.base import PackedStore
from .._store.errors import damaged
from .._store.format import check_pack_result, check_writable, is_store, write_store
from .._store.index import file_stem
from .._store.layout import check_index, check_layout
from ..byproducts.records import ReadProblem
from ._pack import pack_label_map_arrays

FORMAT = "luab_fast.relabel"
VERSION = 1
# How the arrays of a label-map store fit together (``_store.layout.check_layout``); scores and indices are
# [N, K, S, S] with K and S from the manifest's meta, checked in ``_check_maps``.
LAYOUT = {"ids": ("S", (), "N"), "index": (np.int64, (), None), "wnids": ("S", (), None),
          "label": (np.int32, (), "N")}


image_stem = file_stem  # kept as a public name of this module


@dataclass
class PackResult:
    """What :func:`pack_label_maps` wrote: the store path, its row count and the files it skipped."""

    path: Path
    rows: int
    seconds: float
    problems: list[ReadProblem] = field(default_factory=list)


def pack_label_maps(src_dir: str | os.PathLike, dst: str | os.PathLike, score_dtype: str = "float32",
                    strict: bool = False, progress: bool = True, num_classes: int = 1000,
                    workers: int | None = None, replace_with_problems: bool = False) -> PackResult:
    """Packs every ``src_dir/<wnid>/<stem>.pt`` (``Tensor[2, K, S, S]``: scores, then class indices as
    floats) into one store at ``dst``, written atomically (a temp sibling, renamed when complete).

    Each file is checked: shape ``[2, K, S, S]`` with K and S shared by all files, finite scores, integral
    indices in ``[0, num_classes)``. A bad file is skipped and reported in ``.problems``; ``strict=True``
    raises ``ValueError`` naming the first bad file instead, and nothing is written. With problems, an existing
    store at ``dst`` is kept (DataError) unless ``replace_with_problems``."""
    src = Path(src_dir)
    if not src.is_dir():
        raise UsageError(f"src_dir must be a directory of <wnid>/<stem>.pt label maps, got {src}")
    if is_store(src):
        raise UsageError(f"src_dir {src} is a packed store, not a directory of <wnid>/<stem>.pt label maps")
    if Path(dst).exists() and Path(dst).resolve() == src.resolve():
        raise UsageError(f"dst {dst} is the source directory; pack into a new path")
    check_writable(dst, FORMAT)  # before reading every file
    t0 = time.perf_counter()
    arrays, problems = pack_label_map_arrays(src, score_dtype, num_classes, strict, progress, workers)
    check_pack_result(dst, len(arrays["ids"]), problems, src, "label maps", replace_with_problems)
    n, k, s, _ = arrays["scores"].shape
    meta = {"source": str(src), "num_classes": num_classes, "topk": k, "size": s, "score_dtype": score_dtype,
            "problems": len(problems)}
    path = write_store(dst, FORMAT, VERSION, arrays, meta)
    return PackResult(path, n, time.perf_counter() - t0, problems)


def _check_maps(path, arrays, meta, full: bool) -> None:
    """The layout (cheap, or ``full``: every value) plus what the meta promises: ``num_classes``, ``topk`` and
    ``size`` agreeing with ``scores`` / ``indices`` [N, K, S, S]."""
    for name, kinds in (("scores", ("float32", "float16")), ("indices", ("int16",))):
        a = arrays.get(name)
        if a is None:
            raise damaged(path, f"array {name!r} is missing")
        if a.dtype.name not in kinds or a.ndim != 4 or a.shape[2] != a.shape[3] or 0 in a.shape[1:]:
            raise damaged(path, f"array {name!r} is {a.dtype.name}{list(a.shape)}, expected {'/'.join(kinds)}"
                                f"[N, K, S, S]")
    if arrays["scores"].shape != arrays["indices"].shape:
        raise damaged(path, f"scores {list(arrays['scores'].shape)} and indices {list(arrays['indices'].shape)} "
                            f"differ in shape")
    check_layout(path, {**arrays, "scores_rows": arrays["scores"][:, 0, 0, 0]},
                 {**LAYOUT, "scores_rows": (arrays["scores"].dtype, (), "N")}, "ids", full=full,
                 refs=[("label", "wnids")])
    check_index(path, arrays["index"], arrays["ids"], full=full)
    _, k, s, _ = arrays["scores"].shape
    nc = meta.get("num_classes")
    if not isinstance(nc, int) or isinstance(nc, bool) or not 1 <= nc <= 32768 or meta.get("topk") != k \
            or meta.get("size") != s:
        raise damaged(path, f"meta num_classes={nc!r}, topk={meta.get('topk')!r}, size={meta.get('size')!r} "
                            f"do not fit maps [N, {k}, {s}, {s}]")
    if full and arrays["indices"].size:
        lo, hi = int(np.min(arrays["indices"])), int(np.max(arrays["indices"]))
        if lo < 0 or hi >= nc:
            raise damaged(path, f"class indices in [{lo}, {hi}], expected [0, {nc})")


class LabelMapStore(PackedStore):
    """A packed label-map store, memory-mapped: opening reads only the manifest and maps the arrays."""

    FORMAT, VERSION, LAYOUT = FORMAT, VERSION, LAYOUT

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super().__init__(path, arrays, meta)
        self.device: Any = None  # None: gather from the memory map; else the device of ``_tensors``
        self._tensors: tuple[Any, Any] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "LabelMapStore":
        """Maps a store; ``StoreError`` for a missing, corrupt, foreign or other-version store."""
        return super().open(Path(path))  # messages name the path as a Path

    @classmethod
    def _check(cls, path, arrays: dict[str, np.ndarray], meta: dict[str, Any], full: bool) -> None:
        _check_maps(path, arrays, meta, full)

    # -- shape ------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"LabelMapStore({str(self.path)!r}, rows={len(self)}, topk={self.topk}, size={self.size}, "
                f"scores={self.arrays['scores'].dtype}, device={self.device})")

    @property
    def topk(self) -> int:
        return int(self.arrays["scores"].shape[1])

    @property
    def size(self) -> int:
        """S: the side of the square label-map grid."""
        return int(self.arrays["scores"].shape[2])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @cached_property
    def wnids(self) -> np.ndarray:
        """The ``<wnid>/`` folder of each row, as a numpy str array."""
        try:
            return self.arrays["wnids"].astype(str)[self.arrays["label"]]
        except IndexError:  # verify() checks every label; open() reads none
            raise damaged(self.path, "a label points outside 'wnids'") from None

    # -- tensors ---------------------------------------------------------------------------------------
    def to(self, device: Any) -> "LabelMapStore":
        """Copies ``scores`` and ``indices`` to ``device`` once (as stored: float32/float16 and int16) and
        gathers there from now on; returns ``self``. ``to("cpu")`` loads them into RAM."""
        import torch

        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" means the current device: compare as such
            device = torch.device("cuda", torch.cuda.current_device())
        if self._tensors is None or self._tensors[0].device != device:
            tensors = tuple(torch.from_numpy(np.array(self.arrays[n])).to(device) for n in ("scores", "indices"))
            # kernels gather with these indices unchecked (label_pool's validate=False trusts a packed store): a
            # damaged store must fail here, where one pass on the device costs little beside the copy
            if tensors[1].numel():
                lo, hi = torch.stack(torch.aminmax(tensors[1])).tolist()  # one device sync
                if lo < 0 or hi >= self.num_classes:
                    raise damaged(self.path, f"class indices in [{lo}, {hi}], expected [0, {self.num_classes})")
            self._tensors = tensors  # type: ignore[assignment]
            self.device = device
        return self

    def tensors(self) -> tuple[Any, Any]:
        """(scores ``Tensor[N, K, S, S]`` float32/float16, indices ``Tensor[N, K, S, S]`` int16), as stored, on
        the store's device — for kernels that gather by row themselves. Needs :meth:`to` first."""
        if self._tensors is None:
            raise RuntimeError("the store is not on a device yet; call store.to(device) first")
        return self._tensors

    def gather(self, rows) -> tuple[Any, Any]:
        """(scores ``Tensor[B, K, S, S]`` float32, indices ``Tensor[B, K, S, S]`` int64) of ``rows`` (ints,
        a numpy array or a tensor, [B]), on the store's device (CPU until :meth:`to`)."""
        import torch

        r = torch.as_tensor(rows).reshape(-1) if not isinstance(rows, np.ndarray) else torch.from_numpy(
            np.ascontiguousarray(rows).reshape(-1))
        if r.numel() and (r.dtype.is_floating_point or r.dtype == torch.bool or r.is_complex()):
            raise ValueError(f"rows must be integer, got {r.dtype}")
        r = r.long()
        if r.numel() and (int(r.min()) < 0 or int(r.max()) >= len(self)):
            raise IndexError(f"rows must be in [0, {len(self)}), got values in [{int(r.min())}, {int(r.max())}]")
        if self._tensors is not None:
            s, i = self._tensors
            r = r.to(s.device)
            return s.index_select(0, r).float(), i.index_select(0, r).long()
        idx = r.numpy()
        scores = torch.from_numpy(np.asarray(self.arrays["scores"][idx], dtype=np.float32))
        indices = torch.from_numpy(self.arrays["indices"][idx].astype(np.int64))
        return scores, indices
