"""Release ``.pt`` label maps (``root/<wnid>/<stem>.pt``, ``Tensor[2, K, S, S]`` float32: scores, then class
indices stored as floats) → the columnar arrays of a label-map store, each file validated on the way.

Files load and are checked on a process pool (``torch.load`` is mostly Python, so threads would serialise on
the GIL), in bounded windows, results in file order. The first valid maps vote on the store's (K, S, S); the
arrays are preallocated once that is known and filled row by row.
"""

from __future__ import annotations

import collections
import itertools
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from .._cli import DataError, UsageError
from .._store.index import build_index, file_stem
from ..byproducts.records import ReadProblem
from ..kernels.limits import MAX_ABS_SCORE

PARALLEL_MIN = 4096  # below this many files a process pool costs more than it saves
SHAPE_VOTE = 1024  # the first this many valid maps vote on the store's (K, S, S)
SCORE_DTYPES = {"float32": np.float32, "float16": np.float16}


def list_label_maps(src: Path) -> tuple[list[Path], list[ReadProblem]]:
    """Every ``src/<wnid>/<stem>.pt`` in (wnid, stem) order, and the ``.pt`` files lying outside a folder."""
    files: list[Path] = []
    problems = [ReadProblem(str(p), "not under a <wnid>/ folder: skipped")
                for p in sorted(src.glob("*.pt")) if p.is_file()]
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        files += sorted(p for p in d.iterdir() if p.suffix == ".pt" and p.is_file())
    return files, problems


def _load(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable / non-tensor pickle is a per-file problem
        return exc


def _load_checked(path: Path, num_classes: int) -> tuple[str | None, np.ndarray | None]:
    """(reason, None) for a bad file, (None, map as numpy [2, K, S, S]) for a good one; runs in the workers."""
    obj = _load(path)
    reason = check_label_map(obj, num_classes, None)
    return (reason, None) if reason else (None, obj.numpy())


def check_label_map(obj, num_classes: int, shape: tuple[int, int, int] | None) -> str | None:
    """Why ``obj`` is not a valid ``Tensor[2, K, S, S]`` label map (None when it is). ``shape``: the (K, S, S)
    every map of the store must share, once known."""
    import torch

    if isinstance(obj, Exception):
        return f"unreadable: {type(obj).__name__}: {obj}"
    if not isinstance(obj, torch.Tensor):
        return f"not a tensor: got {type(obj).__name__}"
    if obj.ndim != 4 or obj.shape[0] != 2 or obj.shape[2] != obj.shape[3] or 0 in obj.shape:
        return f"wrong shape: expected [2, K, S, S], got {list(obj.shape)}"
    if shape is not None and tuple(obj.shape[1:]) != shape:
        return f"wrong shape: expected [2, {', '.join(map(str, shape))}] like the other maps, got {list(obj.shape)}"
    if not obj.dtype.is_floating_point:
        return f"wrong dtype: expected float, got {obj.dtype}"
    scores, idx = obj[0].double(), obj[1].double()
    if not torch.isfinite(scores).all():
        return "non-finite scores (NaN or inf)"
    if not torch.isfinite(idx).all() or (idx != idx.round()).any():
        return "class indices not integral"
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= num_classes:
        return f"class index out of range: expected [0, {num_classes}), got [{lo}, {hi}]"
    srt = idx.sort(dim=0).values
    if srt.shape[0] > 1 and bool((srt[1:] == srt[:-1]).any()):
        return "a class repeated along K at one cell (top-k maps list distinct classes)"
    if float(scores.abs().max()) >= MAX_ABS_SCORE:  # what label_pool accepts everywhere (its GPU kernel's range)
        return f"scores out of range: expected |score| < {MAX_ABS_SCORE:.0f}, got {float(scores.abs().max()):g}"
    return None


def _pool_context():
    """fork where it is safe (POSIX, CUDA not initialised in this process): workers start in milliseconds;
    spawn otherwise."""
    import multiprocessing as mp

    import torch

    if "fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized():
        return mp.get_context("fork")
    return mp.get_context("spawn")


def _results(files: list[Path], num_classes: int, workers: int) -> Iterator[tuple[str | None, np.ndarray | None]]:
    """``_load_checked`` of every file, in order: in this process for few files or ``workers <= 1``, else on a
    process pool (``torch.load`` is mostly Python: threads would serialise on the GIL)."""
    if workers <= 1 or len(files) < PARALLEL_MIN:
        yield from (_load_checked(p, num_classes) for p in files)
        return
    pool = ProcessPoolExecutor(workers, mp_context=_pool_context())
    fn = partial(_load_checked, num_classes=num_classes)
    window = workers * 256 * 4  # bounded: results never pile up faster than they are copied out
    try:
        for lo in range(0, len(files), window):
            yield from pool.map(fn, files[lo:lo + window], chunksize=256)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def pack_label_map_arrays(src: Path, score_dtype: str = "float32", num_classes: int = 1000, strict: bool = False,
                          progress: bool = True, workers: int | None = None
                          ) -> tuple[dict[str, np.ndarray], list[ReadProblem]]:
    """(arrays, problems). Arrays: ``scores`` [N, K, S, S] float32/float16, ``indices`` [N, K, S, S] int16,
    ``ids`` [N] ``S`` (file stems), ``index`` (hash table over ids), ``wnids`` [W] ``S``, ``label`` [N] int32
    (row → position in ``wnids``). strict: ValueError naming the first bad file, before anything is written."""
    if score_dtype not in SCORE_DTYPES:
        raise UsageError(f"score_dtype must be one of {sorted(SCORE_DTYPES)}, got {score_dtype!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or not 1 <= num_classes <= np.iinfo(np.int16).max + 1:
        raise UsageError(f"num_classes must be in [1, 32768] (indices are stored as int16), got {num_classes}")
    files, problems = list_label_maps(src)
    if strict and problems:
        raise DataError(f"{problems[0].source}: {problems[0].reason} (--strict: nothing was written)")
    from tqdm.auto import tqdm

    scores = indices = None
    ids: list[str] = []
    wnids: dict[str, int] = {}
    label: list[int] = []
    seen: dict[str, Path] = {}  # image id → the file that gave it
    results = zip(files, _results(files, num_classes, workers or min(16, os.cpu_count() or 1)))
    head = list(itertools.islice(results, SHAPE_VOTE))  # one stray file cannot set the store's shape
    votes = collections.Counter(m.shape[1:] for _, (_, m) in head if m is not None)
    shape = votes.most_common(1)[0][0] if votes else None
    bar = tqdm(total=len(files), unit="file", unit_scale=True, desc=f"label maps {src.name}", disable=not progress)
    for path, (reason, m) in itertools.chain(head, results):
        bar.update()
        if reason is None and m.shape[1:] != shape:
            reason = (f"wrong shape: expected [2, {', '.join(map(str, shape))}] like the other maps, "
                      f"got {list(m.shape)}")
        if reason is None and score_dtype == "float16" and np.abs(m[0]).max() > 65504:
            reason = "score overflows float16: pack with score_dtype='float32'"
        stem = file_stem(path.name)  # the one stem rule of every lookup: cut at the first '.'
        if reason is None and not (stem.isascii() and path.parent.name.isascii() and stem):
            reason = "not an ImageNet-style name: the file stem and its <wnid>/ folder must be non-empty ASCII"
        if reason is None and stem in seen:
            reason = f"duplicate image id {stem!r}, also in {seen[stem]}: skipped (the first file wins)"
        if reason is not None:
            if strict:
                bar.close()
                raise DataError(f"{path}: {reason} (--strict: nothing was written)")
            problems.append(ReadProblem(str(path), reason))
            continue
        if scores is None:
            scores = np.empty((len(files), *shape), SCORE_DTYPES[score_dtype])
            indices = np.empty((len(files), *shape), np.int16)
        n = len(ids)
        scores[n] = m[0]
        indices[n] = m[1]
        seen[stem] = path
        ids.append(stem)
        label.append(wnids.setdefault(path.parent.name, len(wnids)))
    bar.close()
    if not ids:
        first = f"; first: {problems[0].source}: {problems[0].reason}" if problems else ""
        raise DataError(f"no valid label maps under {src} (expected {src}/<wnid>/<stem>.pt files; "
                        f"{len(problems)} problem(s){first}); nothing was written")
    keys = np.array([s.encode() for s in ids], dtype="S")
    arrays = {"scores": scores[:len(ids)], "indices": indices[:len(ids)], "ids": keys,
              "index": build_index(keys), "wnids": np.array([w.encode() for w in wnids], dtype="S"),
              "label": np.asarray(label, np.int32)}
    return arrays, problems
