"""The ``loc`` kind through the runner: boxes from LOC_val_solution.csv or per-image XML mapped into the
evaluation crop, a heat-head model whose map is known (the image's bright square) and a timm CNN's CAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from luab_fast._cli import DataError
from luab_fast.evaluate import REGISTRY, Options
from luab_fast.evaluate.kinds import imagenet_wnids
from luab_fast.evaluate.runner import LoaderSettings, score, split_loader

WNIDS = imagenet_wnids()
CLASSES = (WNIDS[0], WNIDS[1])
SETTINGS = LoaderSettings(batch_size=4, image_size=32, backend="torchvision", threads=2)
SQUARE = (16, 16, 48, 48)  # the bright square of every 64 × 64 image, x0 y0 x1 y1


class BrightHeat(torch.nn.Module):
    """A LUAB-like model: its heat map is the image's brightness pooled to 8 × 8; it always predicts class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.heat_head = torch.nn.Identity()

    def forward(self, x):
        heat = torch.nn.functional.adaptive_avg_pool2d(x.float().mean(1, keepdim=True), 8)[:, 0]
        logits = torch.tensor([[1.0, 0.0]]).expand(len(x), 2)
        return logits, torch.zeros(len(x), 2), heat


def _images(root: Path) -> list[Path]:
    files = []
    for k, wnid in enumerate(CLASSES):
        img = np.zeros((64, 64, 3), np.uint8)
        img[SQUARE[1]:SQUARE[3], SQUARE[0]:SQUARE[2]] = 255
        f = root / "val" / wnid / f"ILSVRC2012_val_0000000{k + 1}.JPEG"
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(f, quality=100)
        files.append(f)
    return files


# image 1 (class 0): its box is the square; image 2 (class 1): its box is a corner the map never points at
BOXES = {1: SQUARE, 2: (0, 0, 10, 10)}


def _csv(root: Path) -> None:
    rows = ["ImageId,PredictionString"] + [f"ILSVRC2012_val_0000000{i},{CLASSES[i - 1]} {' '.join(map(str, b))}"
                                           for i, b in BOXES.items()]
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")


def _xml(folder: Path) -> None:
    for i, (x0, y0, x1, y1) in BOXES.items():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"ILSVRC2012_val_0000000{i}.xml").write_text(
            f"<annotation><size><width>64</width><height>64</height><depth>3</depth></size><object>"
            f"<name>{CLASSES[i - 1]}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object></annotation>")


def run(path: Path, model, options: Options = Options()) -> dict:
    split = REGISTRY["loc"].read(path, CLASSES, options, "s")
    return score(model, split, split_loader(split, torch.device("cpu"), SETTINGS), len(CLASSES))


def test_boxes_are_mapped_into_the_centre_crop(tmp_path):
    _images(tmp_path)
    _csv(tmp_path)
    split = REGISTRY["loc"].read(tmp_path / "val", CLASSES, Options(), "s")
    # loc's own crop is the whole shorter side (the WSOL protocol sees the whole image): 64 px drawn at 3.5×
    assert split.extra["boxes"][0].tolist() == [[56, 56, 168, 168]]
    assert split.extra["boxes"][1].tolist() == [[0, 0, 35, 35]]
    # --crop-pct 0.875: the centre 56 px from (4, 4), drawn at 224 / 56 = 4× on the canvas
    split = REGISTRY["loc"].read(tmp_path / "val", CLASSES, Options(crop_fraction=0.875), "s")
    assert split.extra["boxes"][0].tolist() == [[48, 48, 176, 176]]
    assert split.extra["boxes"][1].tolist() == [[0, 0, 24, 24]]


@pytest.mark.parametrize("source", ["csv", "xml"])
def test_heat_head_localisation_scored_by_hand(tmp_path, source):
    _images(tmp_path)
    options = Options()
    if source == "csv":
        _csv(tmp_path)
    else:
        _xml(tmp_path / "Annotations")
        options = Options(boxes=tmp_path / "Annotations")
    out = run(tmp_path / "val", BrightHeat(), options)
    # the map's peak and thresholded region are the square: image 1 is found, image 2's corner box is not
    assert (out["pointing_game"], out["gt_known_loc"], out["maxboxacc"], out["n"]) == (0.5, 0.5, 0.5, 2)
    assert (out["top1"], out["top1_loc"]) == (0.5, 0.5)  # image 1's class is right, image 2's wrong


def test_cam_of_a_plain_cnn(tmp_path):
    import timm

    _images(tmp_path)
    _csv(tmp_path)
    torch.manual_seed(0)
    out = run(tmp_path / "val", timm.create_model("resnet10t", num_classes=2).eval())
    assert out["n"] == 2 and 0.0 <= out["maxboxacc"] <= 1.0 and out["top1"] in (0.0, 0.5, 1.0)


def test_images_without_boxes_are_named(tmp_path):
    _images(tmp_path)
    with pytest.raises(DataError, match="2 of 2 images have no box.*--boxes"):
        run(tmp_path / "val", BrightHeat())
