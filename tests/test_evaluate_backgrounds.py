"""The Backgrounds Challenge / ImageNet-9 (luab_fast.evaluate.kinds_backgrounds): the release layout, the
in_to_in9.json map, accuracy and BG-Gap by hand, hostile folders and maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from luab_fast._cli import DataError
from luab_fast.evaluate.kinds_backgrounds import bg_gap, in9_accuracy, read_in9, read_in_to_in9

FOLDERS = ("00_dog", "01_bird", "02_wheeled vehicle", "03_reptile", "04_carnivore", "05_insect",
           "06_musical instrument", "07_primate", "08_fish")


def _variation(root, variation, folders=FOLDERS, per=1):
    for name in folders:
        d = root / variation / "val" / name
        d.mkdir(parents=True)
        for i in range(per):
            Image.new("RGB", (8, 8)).save(d / f"{name[:2]}_{i}.JPEG")
    return root


def _map(path, table=None):
    table = table or {str(k): (k % 10 if k % 10 < 9 else -1) for k in range(1000)}
    path.write_text(json.dumps(table))
    return path


def test_layout_and_labels(tmp_path):
    files, labels = read_in9(_variation(tmp_path, "mixed_rand", per=2), "mixed_rand")
    assert len(files) == 18 and files[2].endswith("mixed_rand/val/01_bird/01_0.JPEG")
    np.testing.assert_array_equal(labels, np.repeat(np.arange(9), 2))


def test_accuracy_and_gap_by_hand(tmp_path):
    m = read_in_to_in9(_map(tmp_path / "in_to_in9.json"))  # ImageNet k → k % 10, or -1 where k % 10 == 9
    logits = np.zeros((4, 1000))
    logits[0, 3] = 1  # → 3: right for label 3
    logits[1, 19] = 1  # → -1: never right
    logits[2, 12] = 1  # → 2: right for label 2
    logits[3, 15] = 1  # → 5 for label 4: wrong
    out = in9_accuracy(logits, np.array([3, 8, 2, 4]), m)
    assert out == {"top1": 0.5, "n": 4}
    assert bg_gap(0.862, 0.789) == pytest.approx(0.073)


def test_hostile(tmp_path):
    with pytest.raises(DataError, match="found 2"):
        read_in9(_variation(tmp_path / "a", "original", folders=FOLDERS[:2]), "original")
    root = _variation(tmp_path / "b", "original", per=1)
    for f in (root / "original" / "val" / "05_insect").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="05_insect holds no images"):
        read_in9(root, "original")
    with pytest.raises(DataError, match="no_fg/val is missing"):
        read_in9(root, "no_fg")
    with pytest.raises(ValueError, match="variation must be one of"):
        read_in9(root, "mixed_other")
    with pytest.raises(DataError, match="in_to_in9.json is missing"):
        read_in_to_in9(tmp_path / "in_to_in9.json")
    with pytest.raises(DataError, match="short.json must map every ImageNet index"):
        read_in_to_in9(_map(tmp_path / "short.json", {"0": 1}))
    with pytest.raises(DataError, match="big.json values must be integers -1..8"):
        read_in_to_in9(_map(tmp_path / "big.json", {str(k): 9 for k in range(1000)}))
    with pytest.raises(ValueError, match="labels must be IN-9 classes"):
        in9_accuracy(np.zeros((1, 1000)), np.array([9]), np.zeros(1000, np.int64))
