"""Label-free features of the demo's images, for ``python -m luab_fast.annotate --demo``: the HOG descriptor
(Dalal & Triggs, CVPR 2005; ``skimage.feature.hog``) of each image in grey levels, blurred first.

The paper's learner runs on features that carry the class without any label (a self-supervised backbone's);
the demo's 16×16 grey levels carried little of it (a logistic regression on true labels: 34.5% right; on these:
81.6%, ``docs/data-and-training.md``), so the learner could not help and the learner-in-the-loop methods needed
as many labels as ``ds_model``. Gradient orientations describe the digit's strokes whatever their polarity (white
or black ink) and tolerate small shifts. The blur (σ = ``SIGMA`` px) first removes most of the background's
stripes (period 7–11 px, ``data/_demo_render.py``), whose gradients would otherwise outweigh the strokes'.

The 1,764 HOG values are then projected on their first ``PCA_DIMS`` principal components (``reduce_features``,
scikit-learn's PCA fit on the features alone): the learner's cost is linear in its input width, and the demo ran
about 3 minutes on the full descriptor against well under a minute on the projection, with the same effect
(``docs/data-and-training.md``).

Nothing here reads a label: the features are a function of the image bytes alone, and the cache beside the demo
(``cache_path``) is keyed by those bytes and the extractor's and the projection's settings, so a regenerated demo
or a changed setting recomputes them and a relabelled one does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .._atomic import atomic_path
from .._cli import DataError

FEATURES_VERSION = 2  # bump when the computation changes: every cache is then recomputed
SIGMA = 2.5  # px: blurs the stripes (period 7–11 px) away and keeps the strokes (glyphs of 40–72 px)
ORIENTATIONS = 9  # Dalal & Triggs' choice, skimage's default
PIXELS_PER_CELL = 12  # 8×8 cells on the 96 px canvas: a few cells per stroke of the smallest glyph
CELLS_PER_BLOCK = 2
# Principal components kept (a power of two, for the Hadamard rotation): the fewest measured that kept the demo's
# effect on seeds 0-2 (docs; 128 kept it too, for ~15% more CPU). Not whitened: standardised one by one (what
# demo_problem does to plain PCA columns), the weak components' noise weighs as much as the strong ones' signal
# and the effect was lost (128: 0.48-0.52 of ds_model's labels; 256: 0.60), so reduce_features rotates them to
# equal variances first.
PCA_DIMS = 64
SETTINGS = dict(version=FEATURES_VERSION, sigma=SIGMA, orientations=ORIENTATIONS, pixels_per_cell=PIXELS_PER_CELL,
                cells_per_block=CELLS_PER_BLOCK, pca_dims=PCA_DIMS, pca="unwhitened, Hadamard-rotated")
CHUNK = 250  # images per process-pool task: ~0.4 s of work, far above the hand-off's cost
MIN_PARALLEL = 2 * CHUNK  # fewer images than this are done in this process: starting workers would cost more


def hog_features(grey: np.ndarray) -> np.ndarray:
    """float32 [N, D]: the HOG descriptor of each of ``grey`` [N, H, W] (grey levels in [0, 1]) after a Gaussian
    blur of σ = ``SIGMA``; D depends on H and W only (1,764 for the demo's 96×96)."""
    from skimage.feature import hog
    from skimage.filters import gaussian

    if not isinstance(grey, np.ndarray) or grey.ndim != 3 or grey.dtype.kind != "f" or 0 in grey.shape:
        raise ValueError(f"grey must be a float array [N, H, W] of grey levels, got "
                         f"{getattr(grey, 'shape', type(grey).__name__)} {getattr(grey, 'dtype', '')}")
    if min(grey.shape[1:]) < PIXELS_PER_CELL * CELLS_PER_BLOCK:
        raise ValueError(f"grey images must be at least {PIXELS_PER_CELL * CELLS_PER_BLOCK} px on each side (one "
                         f"HOG block), got {grey.shape[1]}×{grey.shape[2]}")
    out = [hog(gaussian(g, sigma=SIGMA), orientations=ORIENTATIONS, pixels_per_cell=(PIXELS_PER_CELL,) * 2,
               cells_per_block=(CELLS_PER_BLOCK,) * 2) for g in grey]
    return np.stack(out).astype(np.float32)


def _read_grey(files: Sequence[str]) -> np.ndarray:
    """float32 [N, H, W] grey levels in [0, 1] of ``files``, which must all be images of one size."""
    from PIL import Image, UnidentifiedImageError

    out, size = [], None
    for f in files:
        try:
            with Image.open(f) as im:
                g = np.asarray(im.convert("L"), np.float32) / 255.0
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"image {f}: cannot be read ({exc}); expected an image file") from None
        if size is None:
            size = g.shape
        elif g.shape != size:
            raise DataError(f"image {f} is {g.shape[1]}×{g.shape[0]} px; expected {size[1]}×{size[0]} like the "
                            f"first of its batch ({files[0]})")
        out.append(g)
    return np.stack(out)


def _chunk_features(files: Sequence[str]) -> tuple[tuple[int, ...], np.ndarray]:
    """(the images' size, their features): a process-pool task."""
    grey = _read_grey(files)
    return grey.shape[1:], hog_features(grey)


def image_features(files: Sequence[str | os.PathLike], workers: int | None = None) -> np.ndarray:
    """float32 [N, D]: row i is the HOG descriptor (``hog_features``) of image ``files[i]``; all images of one
    size. ``workers`` processes share the work (default: this machine's cores); a few hundred images are done
    here. skimage's HOG normalises its blocks in a Python loop, so threads would wait on the GIL."""
    files = [str(f) for f in files]
    if not files:
        raise ValueError("files must name at least one image, got none")
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    if workers == 1 or len(files) < MIN_PARALLEL:
        parts = [_chunk_features(c) for c in chunks]
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
            parts = list(pool.map(_chunk_features, chunks))
    sizes = [size for size, _ in parts]  # each chunk checked its own images; the chunks are compared here
    for chunk, size in zip(chunks, sizes):
        if size != sizes[0]:
            raise DataError(f"image {chunk[0]} is {size[1]}×{size[0]} px; expected {sizes[0][1]}×{sizes[0][0]} like "
                            f"the first ({files[0]})")
    return np.concatenate([f for _, f in parts])


def reduce_features(feats: np.ndarray, dims: int = PCA_DIMS) -> np.ndarray:
    """float32 [N, k]: ``feats`` [N, D] projected on their first k principal components (k = the largest power of
    two <= ``dims``, N - 1 and D), fit on ``feats`` alone (no label), in float64, then rotated by the normalised
    k × k Hadamard matrix (``scipy.linalg.hadamard``). The rotation mixes every component into every column
    with weights ±1/√k, so all columns get the same variance (the components' mean) and the distances between
    rows are kept: demo_problem's per-column standardisation then scales them all alike instead of whitening
    the components. N centred rows span at most N - 1 dimensions."""
    from scipy.linalg import hadamard
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    if not isinstance(feats, np.ndarray) or feats.ndim != 2 or feats.shape[0] < 2 or feats.shape[1] < 1:
        raise ValueError(f"feats must be an array [N, D], N >= 2 (one row has no principal components), D >= 1, "
                         f"got {getattr(feats, 'shape', type(feats).__name__)}")
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1 or dims & (dims - 1):
        raise ValueError(f"dims must be a power of two (the Hadamard rotation's size), got {dims!r}")
    n, d = feats.shape
    k = 1 << (min(dims, n - 1, d).bit_length() - 1)
    # Both solvers are exact and deterministic (no random state; they agree to 1e-6 on the demo), and each is the
    # cheaper one on its side: the [D, D] covariance's eigendecomposition for many rows (the demo's 5,000 × 1,764:
    # 3.8 s against 12.9 s), the SVD for few.
    pca = PCA(n_components=k, svd_solver="covariance_eigh" if n >= d else "full")
    # One BLAS thread: OpenBLAS's threads spin-wait for each other, and on a busy 2-core machine a 200 × 1,764 SVD
    # took 9 s with two threads against 0.1 s with one.
    with threadpool_limits(1, user_api="blas"):
        projected = pca.fit_transform(feats.astype(np.float64))
    return (projected @ (hadamard(k) / np.sqrt(k))).astype(np.float32)


def content_key(files: Sequence[str | os.PathLike]) -> str:
    """A digest of the extractor's settings and of every file's bytes, in order: the cache's identity. Reading
    the 5,000 demo images' bytes takes a fraction of a second; computing their features several seconds."""
    h = hashlib.blake2b(json.dumps(SETTINGS, sort_keys=True).encode(), digest_size=16)
    for f in files:
        with open(f, "rb") as fh:
            h.update(hashlib.blake2b(fh.read(), digest_size=16).digest())  # per file: boundaries count too
    return h.hexdigest()


def cache_path(demo_root: str | os.PathLike) -> Path:
    """Where the features of the demo at ``demo_root`` are cached: beside it, not inside (the demo's folder holds
    only the demo's own files; anything else there would stop its regeneration)."""
    root = Path(demo_root)
    return root.parent / f"{root.name}.hog-features.npz"


def _load(cache: Path, key: str, n: int) -> np.ndarray | None:
    """The cached features when ``cache`` holds features of ``n`` rows under ``key``, else None."""
    try:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            feats = z["features"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing, torn or not ours: recompute
        return None
    ok = feats.dtype == np.float32 and feats.ndim == 2 and feats.shape[0] == n and np.isfinite(feats).all()
    return feats if ok else None


def cached_features(files: Sequence[str | os.PathLike], cache: str | os.PathLike) -> np.ndarray:
    """``reduce_features(image_features(files))``, read from ``cache`` (.npz) when it was computed from the same
    bytes with the same settings, else computed and written there atomically. A cache that cannot be written is
    reported on stderr and the features returned all the same."""
    cache = Path(cache)
    files = [str(f) for f in files]
    key = content_key(files)
    feats = _load(cache, key, len(files))
    if feats is not None:
        return feats
    feats = reduce_features(image_features(files))
    try:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), features=feats)
    except OSError as exc:
        print(f"luab_fast: could not cache the demo's features in {cache} ({exc.strerror or exc}); they are "
              f"recomputed next time", file=sys.stderr)
    return feats


def demo_features(demo_root: str | os.PathLike, files: Sequence[str | os.PathLike]) -> np.ndarray:
    """float32 [N, PCA_DIMS]: the features of ``files`` (the demo's images at ``demo_root``), cached beside the
    demo."""
    return cached_features(files, cache_path(demo_root))
