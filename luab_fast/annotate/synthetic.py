"""Synthetic annotation problems: features with a known, configurable class separability, for simulations at the
seed's scale without its BYOL features (a separate download).

Each class has a mean at ``separability`` times a random unit vector in ``dim`` dimensions; a sample is its class
mean plus standard normal noise. In 64+ dimensions random directions are nearly orthogonal, so two class means
lie about separability·√2 apart, and how well the learner can do is set by that one number.
"""

from __future__ import annotations

import numpy as np

# the seed's imagenet_100_classes: 100 classes, ImageNet's ≈1,300 images per class (../shared/docs/aggregation.md §A)
IMAGENET100 = {"n_images": 125_689, "n_classes": 100}


def synthetic_problem(n_images: int, n_classes: int, dim: int = 64, separability: float = 2.0,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 [N, dim], truth int64 [N]); classes as equal in size as N allows, in random order."""
    for name, v, lo in (("n_images", n_images, 1), ("n_classes", n_classes, 2), ("dim", dim, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if n_images < n_classes:
        raise ValueError(f"n_images must be >= n_classes={n_classes}, got {n_images}")
    if isinstance(separability, bool) or not isinstance(separability, (int, float, np.integer, np.floating)) \
            or not np.isfinite(separability) or separability < 0:
        raise ValueError(f"separability must be a finite number >= 0, got {separability!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    truth = rng.permutation(np.arange(n_images) % n_classes).astype(np.int64)
    means = rng.standard_normal((n_classes, dim))
    means *= separability / np.linalg.norm(means, axis=1, keepdims=True)
    feats = means[truth] + rng.standard_normal((n_images, dim))
    return feats.astype(np.float32), truth
