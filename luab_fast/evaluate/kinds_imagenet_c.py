"""ImageNet-C (Hendrycks & Dietterich, ICLR 2019): error per corruption and severity, CE, mCE and relative mCE.

Layout (the released tarballs, unpacked): ``ROOT/<corruption>/<severity 1..5>/<wnid>/<image>``, or grouped one
level deeper as the tarballs are named, ``ROOT/{noise,blur,weather,digital,extra}/<corruption>/...``. The images
are already 224 × 224 (their ``test.py`` only centre-crops 224 and normalises: no resize).

Metric (their paper, section 3, and hendrycks/robustness ``ImageNet-C/test.py``): E(c, s) the top-1 error on
corruption c at severity s; CE_c = Σ_s E(c, s) / Σ_s E_AlexNet(c, s); mCE = mean of CE_c over the 15 benchmark
corruptions; relative CE_c = Σ_s (E(c, s) − E_clean) / Σ_s (E_AlexNet(c, s) − E_AlexNet_clean), relative mCE its
mean. Only AlexNet's mean error per corruption (over the 5 severities) is needed, since Σ_s = 5 × mean:
``ALEXNET_ERR`` are those means as google-research/augmix ``imagenet.py`` ships them ("Raw AlexNet errors taken
from https://github.com/hendrycks/robustness"); ``ALEXNET_CLEAN_ERR`` is 1 − 0.56522, the top-1 torchvision
reports for the AlexNet weights the ImageNet-C ``test.py`` loads. The 4 extra (validation) corruptions have no
published AlexNet errors: their errors are reported, never a CE.

How to call::

    splits = read_imagenet_c(ROOT)       # [CorruptionSplit(corruption, severity, files, wnids)], sorted
    errors = {(s.corruption, s.severity): top1_error_of_the_model_on(s) for s in splits}   # fractions
    metrics = corruption_errors(errors, clean_error=0.239)   # clean_error optional (relative mCE needs it)
    # -> {"error/<c>/<s>", "error/<c>": fractions; "ce/<c>", "mce", "relative_ce/<c>", "relative_mce":
    #     percent of AlexNet's (AlexNet = 100); "mce"/"relative_mce" only when all 15 corruptions are given}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from .._cli import DataError
from ._kind_files import class_folders, subfolders

CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
GROUPS = ("noise", "blur", "weather", "digital", "extra")  # the release's tarball names
SEVERITIES = (1, 2, 3, 4, 5)
ALEXNET_ERR = dict(zip(CORRUPTIONS, (0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360,
                                     0.866816, 0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840,
                                     0.606500)))
ALEXNET_CLEAN_ERR = 1 - 0.56522


@dataclass(frozen=True)
class CorruptionSplit:
    corruption: str
    severity: int
    files: tuple[str, ...]
    wnids: tuple[str, ...]  # the class folder of each file


def read_imagenet_c(root: str | Path) -> list[CorruptionSplit]:
    """Every (corruption, severity) folder under ``root``, sorted by corruption (benchmark order, extras after)
    then severity. DataError naming the folder for an unknown corruption folder, a severity folder not named
    1..5, a corruption without all 5 severities or a severity folder without class folders of images."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"imagenet-c: {root} is not a folder (expected {root}/<corruption>/<severity>/<wnid>/)")
    known = CORRUPTIONS + EXTRA_CORRUPTIONS
    found: dict[str, Path] = {}
    for d in subfolders(root):
        inner = [d] if d.name in known else subfolders(d) if d.name in GROUPS else None
        if inner is None:
            raise DataError(f"imagenet-c: {d} is neither a corruption ({', '.join(known)}) nor a group folder "
                            f"({', '.join(GROUPS)})")
        for c in inner:
            if c.name not in known:
                raise DataError(f"imagenet-c: {c} is not a corruption folder ({', '.join(known)})")
            if c.name in found:
                raise DataError(f"imagenet-c: corruption {c.name} is in two folders, {found[c.name]} and {c}")
            found[c.name] = c
    if not found:
        raise DataError(f"imagenet-c: {root} holds no corruption folder ({', '.join(known)})")
    splits = []
    for name in (c for c in known if c in found):
        levels = {d.name: d for d in subfolders(found[name])}
        wanted = {str(s) for s in SEVERITIES}
        if set(levels) != wanted:
            raise DataError(f"imagenet-c: {found[name]} must hold severity folders 1..5 (and nothing else), found "
                            f"{sorted(levels)}")
        for s in SEVERITIES:
            files, wnids = class_folders(levels[str(s)], "imagenet-c")
            splits.append(CorruptionSplit(name, s, tuple(files), tuple(wnids)))
    return splits


def corruption_errors(errors: Mapping[tuple[str, int], float], clean_error: Optional[float] = None) -> dict[str, Any]:
    """CE, mCE and (given the model's ``clean_error`` on ImageNet val) relative mCE from the top-1 error
    fractions ``errors[(corruption, severity)]``; each corruption given must have all 5 severities."""
    by_corruption: dict[str, dict[int, float]] = {}
    for key, err in errors.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in CORRUPTIONS + EXTRA_CORRUPTIONS
                and key[1] in SEVERITIES):
            raise ValueError(f"errors: key {key!r} must be (corruption, severity 1..5) with a corruption of "
                             f"{CORRUPTIONS + EXTRA_CORRUPTIONS}")
        if not (isinstance(err, (int, float, np.floating)) and 0.0 <= float(err) <= 1.0):
            raise ValueError(f"errors[{key!r}] must be an error fraction in [0, 1], got {err!r}")
        by_corruption.setdefault(key[0], {})[key[1]] = float(err)
    if not by_corruption:
        raise ValueError("errors is empty: nothing to score")
    if clean_error is not None and not (isinstance(clean_error, (int, float)) and 0.0 <= clean_error <= 1.0):
        raise ValueError(f"clean_error must be an error fraction in [0, 1], got {clean_error!r}")
    out: dict[str, Any] = {}
    for c, levels in by_corruption.items():
        missing = [s for s in SEVERITIES if s not in levels]
        if missing:
            raise ValueError(f"errors: corruption {c} lacks severities {missing}; its CE needs all five")
        mean = float(np.mean([levels[s] for s in SEVERITIES]))
        out.update({f"error/{c}/{s}": levels[s] for s in SEVERITIES})
        out[f"error/{c}"] = mean
        if c in ALEXNET_ERR:
            out[f"ce/{c}"] = 100.0 * mean / ALEXNET_ERR[c]
            if clean_error is not None:
                out[f"relative_ce/{c}"] = 100.0 * (mean - clean_error) / (ALEXNET_ERR[c] - ALEXNET_CLEAN_ERR)
    if all(c in by_corruption for c in CORRUPTIONS):
        out["mce"] = float(np.mean([out[f"ce/{c}"] for c in CORRUPTIONS]))
        if clean_error is not None:
            out["relative_mce"] = float(np.mean([out[f"relative_ce/{c}"] for c in CORRUPTIONS]))
    return out
