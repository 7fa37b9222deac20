"""WSOL localisation (luab_fast.evaluate.localization): boxes from thresholded maps against a per-threshold
brute force, metrics against values computed by hand, box files in their exact formats, hostile inputs."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from scipy import ndimage

from luab_fast._cli import DataError
from luab_fast.evaluate.localization import (
    CAM_THRESHOLDS,
    LocalizationMeter,
    best_ious,
    box_iou,
    cam,
    normalize_maps,
    read_box_xml,
    read_loc_solution,
    timm_cam,
    transform_boxes,
)


def _brute(score_map, gt, thresholds):
    """One scipy label per threshold on the whole map, the largest region by pixels: the definition."""
    h, w = score_map.shape
    u8 = (score_map * 255).astype(np.uint8)
    single, multi = [], []
    for t in thresholds:
        labels, n = ndimage.label(u8 > int(t * int(u8.max())), structure=np.ones((3, 3)))
        if n == 0:
            boxes, sizes = np.zeros((1, 4), np.int64), np.ones(1)
        else:
            sl = ndimage.find_objects(labels)
            boxes = np.asarray([[x.start, y.start, min(x.stop, w - 1), min(y.stop, h - 1)] for y, x in sl])
            sizes = np.bincount(labels.ravel())[1:]
        iou = box_iou(boxes, gt).max(1)
        single.append(iou[np.argmax(sizes)])
        multi.append(iou.max())
    return np.asarray(single), np.asarray(multi)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("grid", [3, 7, 13])
def test_best_ious_match_per_threshold_brute_force(seed, grid):
    rng = np.random.default_rng(seed)
    coarse = torch.as_tensor(rng.random((1, 1, grid, grid)), dtype=torch.float32)
    m = normalize_maps(coarse[0], (61, 47))[0]
    gt = np.array([[5, 7, 30, 40], [20, 2, 46, 20]])
    thresholds = np.arange(0, 1, 0.01)
    got = best_ious(m, gt, thresholds)
    want = _brute(m, gt, thresholds)
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-12)


def test_iou_by_hand_and_the_region_box_convention():
    m = np.zeros((64, 64))
    m[10:20, 10:30] = 1.0  # rows 10..19, cols 10..29: their box (10, 10, 30, 20), pixels inclusive
    gt = np.array([[10, 10, 29, 29]])  # 20 × 20 = 400 px
    inter, pred = 20 * 11, 21 * 11
    single, multi = best_ious(m, gt, np.array([0.0, 0.5, 0.999]))
    np.testing.assert_allclose(single, inter / (400 + pred - inter))
    np.testing.assert_allclose(multi, single)


def test_largest_region_versus_every_region():
    m = np.zeros((100, 100))
    m[60:95, 5:95] = 0.9  # large region, no GT there
    m[5:25, 5:25] = 1.0  # small region, exactly the GT box
    gt = np.array([[5, 5, 24, 24]])
    single, multi = best_ious(m, gt, np.array([0.5]))
    assert single[0] == 0.0
    np.testing.assert_allclose(multi[0], 400 / (400 + 21 * 21 - 400))
    meter = LocalizationMeter(cam_thresholds=[0.5])
    meter.update(m[None], [gt], correct=[True])
    out = meter.compute()
    assert out["maxboxacc"] == 0.0 and out["gt_known_loc"] == 0.0 and out["top1_loc"] == 0.0
    assert out["maxboxacc_v2_iou30"] == out["maxboxacc_v2_iou50"] == out["maxboxacc_v2_iou70"] == 1.0
    assert out["maxboxacc_v2"] == 1.0 and out["pointing_game"] == 1.0


def test_meter_by_hand_over_three_images():
    h = w = 32
    maps, gts = np.zeros((3, h, w)), []
    maps[0, 4:12, 4:12] = 1.0  # perfect box → hit
    gts.append(np.array([[4, 4, 11, 11]]))
    maps[1, 20:30, 20:30] = 1.0  # peak and box far from the GT → miss everywhere
    gts.append(np.array([[0, 0, 5, 5]]))
    maps[2, 2:6, 2:6] = 1.0  # peak inside a big GT, box too small: pointing hit, IoU 25/400 < 0.3
    gts.append(np.array([[0, 0, 19, 19]]))
    meter = LocalizationMeter()
    meter.update(torch.as_tensor(maps, dtype=torch.float32), gts, correct=torch.tensor([False, True, True]))
    out = meter.compute()
    assert out["n"] == 3
    assert out["pointing_game"] == pytest.approx(2 / 3)
    assert out["maxboxacc"] == out["gt_known_loc"] == pytest.approx(1 / 3)
    assert out["top1_loc"] == 0.0  # the one localised image is misclassified
    assert out["maxboxacc_v2"] == pytest.approx(1 / 3)


def test_pointing_tolerance_and_upsampled_maps():
    coarse = torch.zeros(1, 7, 7)
    coarse[0, 1, 1] = 1.0  # peak in cell (1, 1) of 7 → pixel ~ (1.5 / 7) · 224 = 48 of a 224 image
    gt = [np.array([[60, 60, 100, 100]])]
    strict = LocalizationMeter(cam_thresholds=[0.5])
    strict.update(coarse, gt, image_size=(224, 224))
    loose = LocalizationMeter(cam_thresholds=[0.5], pointing_tolerance=15)
    loose.update(coarse, gt, image_size=(224, 224))
    assert strict.compute()["pointing_game"] == 0.0 and loose.compute()["pointing_game"] == 1.0
    assert "top1_loc" not in strict.compute()


def test_normalize_maps_range_and_constant_map():
    maps = torch.stack([torch.arange(16.0).reshape(4, 4), torch.full((4, 4), 3.0)])
    out = normalize_maps(maps, (8, 8))
    assert out.shape == (2, 8, 8) and out[0].min() == 0.0 and out[0].max() == 1.0
    assert (out[1] == 0).all()


def test_cam_equals_weighted_sum_and_timm_cam():
    torch.manual_seed(0)
    feats, weight = torch.randn(2, 5, 3, 4), torch.randn(7, 5)
    classes = torch.tensor([6, 2])
    want = torch.stack([(weight[c][:, None, None] * f).sum(0) for f, c in zip(feats, classes)])
    torch.testing.assert_close(cam(feats, weight, classes), want)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=10).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = timm_cam(model, images, torch.tensor([3, 9]))
        f = model.forward_features(images)
        head = model.get_classifier()
        torch.testing.assert_close(got, cam(f, head.weight, torch.tensor([3, 9])))
        # pooled CAM + bias is the logit: the CAM is the logit's spatial decomposition
        torch.testing.assert_close(got.mean((1, 2)) + head.bias[[3, 9]], model(images)[[0, 1], [3, 9]],
                                   rtol=1e-4, atol=1e-4)


def test_transform_boxes_by_hand():
    box = np.array([[100, 50, 300, 200]])
    # 500 × 375: shorter side 375 → 256, width int(256 · 500 / 375) = 341; crop 224 at left round(58.5) = 58,
    # top 16
    sx, sy = 341 / 500, 256 / 375
    want = np.floor([100 * sx - 58, 50 * sy - 16, 300 * sx - 58, 200 * sy - 16])
    np.testing.assert_array_equal(transform_boxes(box, (500, 375))[0], want)
    sq = transform_boxes(box, (500, 375), mode="square")[0]
    np.testing.assert_array_equal(sq, [int(100 * 224 / 500), int(50 * 224 / 375), int(300 * 224 / 500),
                                       int(200 * 224 / 375)])
    clipped = transform_boxes(np.array([[0, 0, 499, 374]]), (500, 375))[0]
    np.testing.assert_array_equal(clipped, [0, 0, 223, 223])
    with pytest.raises(ValueError, match="mode"):
        transform_boxes(box, (500, 375), mode="stretch")


XML = """<annotation><folder>val</folder><filename>ILSVRC2012_val_00000001</filename>
<size><width>500</width><height>375</height><depth>3</depth></size>
<object><name>n01751748</name><bndbox><xmin>111</xmin><ymin>108</ymin><xmax>441</xmax><ymax>193</ymax></bndbox>
</object><object><name>n01751748</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>40</xmax><ymax>50</ymax></bndbox>
</object></annotation>"""


def test_read_box_xml_and_hostile_xml(tmp_path):
    f = tmp_path / "ILSVRC2012_val_00000001.xml"
    f.write_text(XML)
    names, boxes, size = read_box_xml(f)
    assert names == ["n01751748", "n01751748"] and size == (500, 375)
    np.testing.assert_array_equal(boxes, [[111, 108, 441, 193], [2, 3, 40, 50]])
    bad = tmp_path / "broken.xml"
    bad.write_text(XML[:150])
    with pytest.raises(DataError, match="broken.xml.*not valid XML"):
        read_box_xml(bad)
    nobox = tmp_path / "nobox.xml"
    nobox.write_text(XML.replace("<xmin>111</xmin>", "<xmin>abc</xmin>"))
    with pytest.raises(DataError, match="nobox.xml"):
        read_box_xml(nobox)
    flipped = tmp_path / "flipped.xml"
    flipped.write_text(XML.replace("<xmax>441</xmax>", "<xmax>11</xmax>"))
    with pytest.raises(DataError, match="flipped.xml.*x0 <= x1"):
        read_box_xml(flipped)


def test_read_loc_solution_and_hostile_csv(tmp_path):
    f = tmp_path / "LOC_val_solution.csv"
    f.write_text("ImageId,PredictionString\n"
                 "ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295 \n"
                 "ILSVRC2012_val_00024841,n03000134 1 2 3 4 \n")
    out = read_loc_solution(f)
    names, boxes = out["ILSVRC2012_val_00008726"]
    assert names == ["n02119789"] * 2
    np.testing.assert_array_equal(boxes, [[255, 142, 454, 329], [44, 21, 322, 295]])
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01 1 2 3\n")
    with pytest.raises(DataError, match="bad.csv, line 2"):
        read_loc_solution(bad)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,boxes\nx,y\n")
    with pytest.raises(DataError, match="wrong.csv.*ImageId,PredictionString"):
        read_loc_solution(wrong)


def test_hostile_meter_arguments():
    with pytest.raises(ValueError, match="cam_thresholds"):
        LocalizationMeter(cam_thresholds=[0.5, 1.0])
    meter = LocalizationMeter()
    with pytest.raises(ValueError, match="maps must be"):
        meter.update(np.zeros((2, 4, 4)), [np.array([[0, 0, 1, 1]])])
    with pytest.raises(ValueError, match="gt_boxes\\[1\\] is empty"):
        meter.update(np.ones((2, 4, 4)), [np.array([[0, 0, 3, 3]]), np.zeros((0, 4))])
    assert meter.n == 0 and meter.pointing == 0 and not meter.box_hits.any()  # the refused batch left no trace
    with pytest.raises(ValueError, match="nothing to score"):
        LocalizationMeter().compute()


def test_default_thresholds_are_theirs():
    assert len(CAM_THRESHOLDS) == 1000 and CAM_THRESHOLDS[0] == 0 and CAM_THRESHOLDS[-1] == pytest.approx(0.999)


@pytest.mark.slow  # two spawned processes each import torch: ~10 s on a busy 2-core machine
def test_worker_processes_give_the_same_metrics():
    rng = np.random.default_rng(3)
    maps = torch.as_tensor(rng.random((6, 5, 5)), dtype=torch.float32)
    gts = [np.array([[x, x, x + 20, x + 25]]) for x in rng.integers(0, 30, 6)]
    correct = rng.random(6) > 0.5
    results = []
    for workers in (0, 2):
        meter = LocalizationMeter(cam_thresholds=np.arange(0, 1, 0.05), workers=workers)
        meter.update(maps, gts, correct=correct, image_size=(64, 64))
        meter.update(maps[:3], gts[:3], correct=correct[:3], image_size=(64, 64))
        results.append(meter.compute())
    assert results[0] == results[1] and results[0]["n"] == 9
