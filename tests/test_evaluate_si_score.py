"""SI-Score (luab_fast.evaluate.kinds_si_score): the release layout with its two CSVs, accuracy per factor value
by hand, hostile files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from luab_fast._cli import DataError
from luab_fast.evaluate.kinds_si_score import read_si_score, si_score_accuracy

META = ("image_id,x_coord,y_coord,area,rotation,foreground_class,foreground_instance,background,"
        "bg_resolution_width,bg_resolution_height,pct_inside_image\n")


def _release(root, rows):
    """rows: (image_id, label, area); labels 'koala' → ImageNet 105, 'bell pepper' → 945."""
    test = root / "test"
    test.mkdir(parents=True)
    (test / "foreground_classes.csv").write_text("int,label\n105,koala\n945,bell pepper\n")
    lines = [f"{i},0.5,0.5,{area},0,0,0,0,224,224,1.0\n" for i, _, area in rows]
    (test / "metadata.csv").write_text(META + "".join(lines))
    for i, label, _ in rows:
        (test / label).mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(test / label / f"{i}.jpg")
    return root


ROWS = [(0, "koala", 0.2), (1, "koala", 0.5), (2, "bell pepper", 0.2), (3, "bell pepper", 0.5),
        (4, "bell pepper", 0.5)]


def test_read_and_score_by_hand(tmp_path):
    si = read_si_score(_release(tmp_path, ROWS), "object_size")
    assert [f.rsplit("/", 2)[-2:] for f in si.files][:2] == [["bell pepper", "2.jpg"], ["bell pepper", "3.jpg"]]
    np.testing.assert_array_equal(si.labels, [945, 945, 945, 105, 105])
    assert si.groups == ("area=0.2", "area=0.5", "area=0.5", "area=0.2", "area=0.5")
    logits = np.zeros((5, 1000))  # rows in file order: bell pepper 2, 3, 4, then koala 0, 1
    logits[0, 945] = 1  # right, area 0.2
    logits[1, 105] = 1  # wrong, area 0.5; its class last, outside the top-5
    logits[1, 945] = -5
    logits[2, 945] = 1  # right, area 0.5
    logits[3, 105] = 1  # right, area 0.2
    logits[4, 1] = 2  # wrong, area 0.5; its class second: a top-5 hit
    logits[4, 105] = 1
    out = si_score_accuracy(logits, si)
    assert out["top1"] == pytest.approx(3 / 5) and out["top5"] == pytest.approx(4 / 5)
    assert out["top1/area=0.2"] == 1.0 and out["top1/area=0.5"] == pytest.approx(1 / 3)
    assert out["top1_group_mean"] == pytest.approx((1 + 1 / 3) / 2) and out["n"] == 5


def test_location_groups_pair_the_coordinates(tmp_path):
    si = read_si_score(_release(tmp_path, ROWS[:1]), "object_location")
    assert si.groups == ("x_coord=0.5,y_coord=0.5",)


def test_hostile(tmp_path):
    root = _release(tmp_path / "a", ROWS)
    (root / "test" / "koala" / "9.jpg").write_bytes((root / "test" / "koala" / "0.jpg").read_bytes())
    with pytest.raises(DataError, match="9.jpg has no row in .*metadata.csv"):
        read_si_score(root, "object_size")
    root = _release(tmp_path / "b", ROWS)
    (root / "test" / "foreground_classes.csv").write_text("int,label\n105,koala\n")
    with pytest.raises(DataError, match="bell pepper is not a label of .*foreground_classes.csv"):
        read_si_score(root, "object_size")
    root = _release(tmp_path / "c", ROWS)
    (root / "test" / "metadata.csv").unlink()
    with pytest.raises(DataError, match="metadata.csv is missing"):
        read_si_score(root, "object_size")
    root = _release(tmp_path / "d", ROWS)
    (root / "test" / "metadata.csv").write_text("image_id,area\n0,0.2\n")
    with pytest.raises(DataError, match="lacks column\\(s\\) \\['x_coord', 'y_coord'\\]"):
        read_si_score(root, "object_location")
    with pytest.raises(ValueError, match="factor must be one of"):
        read_si_score(root, "object_colour")
    si = read_si_score(_release(tmp_path / "e", ROWS), "object_size")
    with pytest.raises(ValueError, match="4 rows for 5 images"):
        si_score_accuracy(np.zeros((4, 1000)), si)
