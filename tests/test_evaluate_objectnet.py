"""ObjectNet (luab_fast.evaluate.kinds_objectnet): the release's mapping files in a miniature, scores as the
authors' scorer counts them (checked by hand), the border crop, hostile mapping files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from luab_fast._cli import DataError
from luab_fast.evaluate.kinds_objectnet import BORDER_PX, crop_border, objectnet_scores, read_objectnet

# 4 ImageNet labels on lines 0..3 of imagenet_to_label_2012_v2; PyTorch index = reversed line order, so the
# test sees that the mapping goes through pytorch_to_imagenet_2012_id.json
LINES = ["analog clock", "digital clock", "banana", "tench, Tinca tinca"]
PYTORCH_TO_LINE = {"0": 3, "1": 2, "2": 1, "3": 0}


def _release(root, folders=("alarm_clock", "banana", "bathtub")):
    m = root / "mappings"
    m.mkdir(parents=True)
    (m / "folder_to_objectnet_label.json").write_text(json.dumps(
        {"alarm_clock": "Alarm clock", "banana": "Banana", "bathtub": "Bathtub"}))
    (m / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
        {"Alarm clock": "analog clock; digital clock", "Banana": "banana"}))
    (m / "imagenet_to_label_2012_v2").write_text("\n".join(LINES) + "\n")
    (m / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps(PYTORCH_TO_LINE))
    for k, folder in enumerate(folders):
        d = root / "images" / folder
        d.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (10, 8), (k * 60, i * 60, 0)).save(d / f"{folder}_{i}.png")
    return root


def test_read_maps_imagenet_classes_through_the_pytorch_ids(tmp_path):
    on = read_objectnet(_release(tmp_path))
    assert on.folders == ("alarm_clock", "banana", "bathtub")
    want = np.full(1000, -1)
    want[[3, 2]] = 0  # analog (line 0 → index 3) and digital clock (line 1 → index 2) → alarm_clock
    want[1] = 1  # banana (line 2 → index 1)
    np.testing.assert_array_equal(on.imagenet_to_objectnet, want)
    assert [f.rsplit("/", 1)[1] for f in on.files] == ["alarm_clock_0.png", "alarm_clock_1.png",
                                                       "banana_0.png", "banana_1.png"]  # bathtub: no overlap
    np.testing.assert_array_equal(on.labels, [0, 0, 1, 1])


def test_archive_top_folder_is_found(tmp_path):
    _release(tmp_path / "objectnet-1.0")
    assert len(read_objectnet(tmp_path).files) == 4


def test_scores_by_hand(tmp_path):
    on = read_objectnet(_release(tmp_path))
    logits = np.zeros((4, 1000))
    logits[0, 3] = 5  # analog clock → alarm clock: right
    logits[1, 500] = 5  # an unmapped class first (-1: wrong), digital clock second (top-5 right; restricted right)
    logits[1, 2] = 4
    logits[2, 1] = 5  # banana: right
    logits[3, 2] = 5  # digital clock for a banana: wrong everywhere; banana third → top-5 right
    logits[3, 700] = 4
    logits[3, 1] = 3
    out = objectnet_scores(torch.as_tensor(logits), on.labels, on.imagenet_to_objectnet)
    assert out == {"top1": 0.5, "top5": 1.0, "top1_restricted": 0.75, "n": 4}


def test_border_crop_matches_the_authors_crop_box():
    img = Image.new("RGB", (10, 8))
    img.putpixel((2, 2), (255, 0, 0))
    out = crop_border(img)
    assert BORDER_PX == 2 and out.size == (6, 4) and out.getpixel((0, 0)) == (255, 0, 0)
    arr = np.arange(80).reshape(8, 10)
    np.testing.assert_array_equal(crop_border(arr), arr[2:6, 2:8])
    t = torch.arange(160).reshape(2, 8, 10)
    assert torch.equal(crop_border(t), t[:, 2:6, 2:8])
    with pytest.raises(ValueError, match="too small"):
        crop_border(Image.new("RGB", (4, 4)))


@pytest.mark.parametrize("name", ["folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json",
                                  "pytorch_to_imagenet_2012_id.json", "imagenet_to_label_2012_v2"])
def test_missing_mapping_file_is_named(tmp_path, name):
    root = _release(tmp_path)
    (root / "mappings" / name).unlink()
    with pytest.raises(DataError, match=f"{name} is missing"):
        read_objectnet(root)


def test_hostile_mappings(tmp_path):
    root = _release(tmp_path / "a")
    (root / "mappings" / "objectnet_to_imagenet_1k.json").write_text("{not json")
    with pytest.raises(DataError, match="objectnet_to_imagenet_1k.json is not valid JSON"):
        read_objectnet(root)
    root = _release(tmp_path / "b")
    (root / "mappings" / "objectnet_to_imagenet_1k.json").write_text(json.dumps({"Banana": "plantain"}))
    with pytest.raises(DataError, match="'plantain'.*on no line"):
        read_objectnet(root)
    root = _release(tmp_path / "c")
    (root / "mappings" / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({"0": 99}))
    with pytest.raises(DataError, match="pytorch_to_imagenet_2012_id.json: entry '0'"):
        read_objectnet(root)
    root = _release(tmp_path / "d")
    (root / "images" / "unicycle").mkdir()
    with pytest.raises(DataError, match="unicycle.*folder_to_objectnet_label.json"):
        read_objectnet(root)
    root = _release(tmp_path / "e", folders=("alarm_clock", "bathtub"))
    with pytest.raises(DataError, match="images/banana: an overlapping class folder holds no images"):
        read_objectnet(root)


def test_hostile_scores():
    mapping = np.full(1000, -1)
    mapping[0] = 0
    with pytest.raises(ValueError, match="1000 columns"):
        objectnet_scores(np.zeros((2, 10)), [0, 0], mapping)
    with pytest.raises(ValueError, match="labels must be integer \\[2\\]"):
        objectnet_scores(np.zeros((2, 1000)), [0], mapping)
    with pytest.raises(ValueError, match="maps no ImageNet class"):
        objectnet_scores(np.zeros((2, 1000)), [0, 0], np.full(1000, -1))
