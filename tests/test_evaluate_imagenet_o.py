"""ImageNet-O (luab_fast.evaluate.kinds_imagenet_o): the layout, the in-distribution folders, AUPR / AUROC of
−MSP against values computed by hand, hostile inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from luab_fast._cli import DataError
from luab_fast.evaluate.kinds_imagenet_o import (
    class_mask,
    imagenet_o_scores,
    in_distribution_files,
    read_imagenet_o,
)

MODEL = ("n01", "n02", "n03", "n04")


def _folder(root, wnids, per=2):
    for w in wnids:
        (root / w).mkdir(parents=True)
        for i in range(per):
            Image.new("RGB", (8, 8)).save(root / w / f"{w}_{i}.jpg")
    return root


def test_layout_mask_and_in_distribution(tmp_path):
    files, wnids = read_imagenet_o(_folder(tmp_path / "o", ["n03", "n01"]))
    assert wnids == ["n01", "n01", "n03", "n03"] and files[0].endswith("n01/n01_0.jpg")
    mask = class_mask(sorted(set(wnids)), MODEL)
    np.testing.assert_array_equal(mask, [True, False, True, False])
    val = _folder(tmp_path / "val", ["n01", "n02", "n03"], per=3)
    assert len(in_distribution_files(val, ["n01", "n03"])) == 6
    with pytest.raises(DataError, match="val/n04 is missing"):
        in_distribution_files(val, ["n04"])
    with pytest.raises(DataError, match="not among the model's classes.*n09"):
        class_mask(["n09"], MODEL)
    with pytest.raises(DataError, match="holds no images"):
        read_imagenet_o(_folder(tmp_path / "empty", ["n01"], per=0))


def test_perfectly_separated_gives_one_and_reversed_gives_zero():
    mask = np.array([True, True, False, False])
    confident = np.array([[9.0, 0, 50, 50]] * 3)  # MSP over the masked two ≈ 1; the unmasked 50s are ignored
    unsure = np.array([[1.0, 1, 0, 0]] * 2)  # MSP = 0.5
    out = imagenet_o_scores(torch.as_tensor(unsure), confident, mask)
    assert out == {"aupr": 1.0, "auroc": 1.0, "n": 2, "n_in": 3}
    assert imagenet_o_scores(confident, unsure, mask)["auroc"] == 0.0


def test_aupr_by_hand():
    mask = np.array([True, True])
    # MSP for logits (a, 0) is 1 / (1 + e^-a): anomaly score −MSP ranks small a first
    out_a, in_a = [0.0, 2.0], [1.0, 3.0]
    logits = lambda a: np.stack([np.asarray(a), np.zeros(len(a))], 1)  # noqa: E731
    got = imagenet_o_scores(logits(out_a), logits(in_a), mask)
    # ranked by anomaly: out(0), in(1), out(2), in(3) → precision at each positive: 1/1, 2/3 → AP = (1 + 2/3) / 2
    assert got["aupr"] == pytest.approx((1 + 2 / 3) / 2)
    assert got["auroc"] == pytest.approx(3 / 4)  # pairs (out, in) ranked right: (0,1) (0,3) (2,3) of 4


def test_hostile_scores():
    with pytest.raises(ValueError, match="mask must be bool \\[2\\]"):
        imagenet_o_scores(np.zeros((1, 2)), np.zeros((1, 2)), [1, 1])
    with pytest.raises(ValueError, match="logits_in must have 2 columns"):
        imagenet_o_scores(np.zeros((1, 2)), np.zeros((1, 3)), np.array([True, True]))
    with pytest.raises(ValueError, match="NaN"):
        imagenet_o_scores(np.full((1, 2), np.nan), np.zeros((1, 2)), np.array([True, True]))
