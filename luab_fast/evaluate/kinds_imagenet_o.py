"""ImageNet-O (Hendrycks et al., "Natural Adversarial Examples", CVPR 2021): out-of-distribution detection AUPR.

Layout (the release): ``ROOT/<wnid>/<image>``, 200 folders, each named after the ImageNet-1k class its images
were adversarially confused with. In-distribution set: the ImageNet val images of those same 200 wnids.

Protocol (hendrycks/natural-adv-examples ``eval_many_models.py``, ``get_imagenet_o_results``; measures from
``calibration_tools.get_measures``): the logits are restricted to the 200 classes of the ImageNet-O folders, the
score is the maximum softmax probability (MSP), the anomaly score is −MSP, ImageNet-O images are the positives
and the metric is scikit-learn's ``average_precision_score`` (AUPR; also ``roc_auc_score``, AUROC). Higher is
better; a detector at chance has an AUPR near the share of ImageNet-O images among all scored.

How to call::

    files, wnids = read_imagenet_o(ROOT)          # the out-of-distribution images and their folders
    mask = class_mask(sorted(set(wnids)), model_wnids)          # [C] bool over the model's classes
    in_files = in_distribution_files(IMAGENET_VAL, sorted(set(wnids)))   # ImageNet val, ImageFolder layout
    metrics = imagenet_o_scores(logits_o, logits_in, mask)   # [N, C], [M, C] numpy/torch, the model's order
    # -> {"aupr", "auroc": fractions in [0, 1], "n": ImageNet-O images, "n_in": in-distribution images}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .._cli import DataError
from ._kind_files import as_scores, class_folders, images_in


def read_imagenet_o(root: str | Path) -> tuple[list[str], list[str]]:
    """(files, wnid folder per file) of ImageNet-O at ``root``; DataError naming it when it holds no images."""
    return class_folders(Path(root), "imagenet-o")


def in_distribution_files(imagenet_val: str | Path, wnids: Sequence[str]) -> list[str]:
    """The ImageNet val images (``imagenet_val/<wnid>/<image>``) of ``wnids``; DataError naming a missing or
    empty class folder."""
    root = Path(imagenet_val)
    files = []
    for w in wnids:
        found = images_in(root / w) if (root / w).is_dir() else []
        if not found:
            raise DataError(f"imagenet-o: the in-distribution folder {root / w} is missing or holds no images "
                            f"(expected ImageNet val in class folders)")
        files += found
    return files


def class_mask(wnids: Sequence[str], model_wnids: Sequence[str]) -> np.ndarray:
    """[C] bool over the model's classes, True at ``wnids``; DataError for a wnid the model lacks."""
    index = {w: k for k, w in enumerate(model_wnids)}
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise DataError(f"imagenet-o: {len(unknown)} class folder(s) are not among the model's classes, e.g. "
                        f"{unknown[:5]}")
    mask = np.zeros(len(model_wnids), bool)
    mask[[index[w] for w in wnids]] = True
    return mask


def _msp(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    z = logits[:, mask]
    z = z - z.max(1, keepdims=True)  # a stable softmax: its max is 1 / Σ exp(z − max)
    return 1.0 / np.exp(z).sum(1)


def imagenet_o_scores(logits_o: Any, logits_in: Any, mask: Any) -> dict[str, Any]:
    """AUPR and AUROC of −MSP separating ImageNet-O (``logits_o`` [N, C], positives) from ImageNet val
    (``logits_in`` [M, C]), the softmax taken over the classes where ``mask`` [C] is True."""
    out_ = as_scores(logits_o, "logits_o")
    in_ = as_scores(logits_in, "logits_in", out_.shape[1])
    mask = np.asarray(mask)
    if mask.shape != (out_.shape[1],) or mask.dtype != np.bool_ or not mask.any():
        raise ValueError(f"mask must be bool [{out_.shape[1]}] with some True, got {mask.shape} {mask.dtype}")
    if not len(out_) or not len(in_):
        raise ValueError(f"need images on both sides, got {len(out_)} ImageNet-O and {len(in_)} in-distribution")
    score = -np.concatenate([_msp(out_, mask), _msp(in_, mask)])
    truth = np.r_[np.ones(len(out_)), np.zeros(len(in_))]
    return {"aupr": float(average_precision_score(truth, score)), "auroc": float(roc_auc_score(truth, score)),
            "n": int(len(out_)), "n_in": int(len(in_))}
