"""The robustness papers' kinds (kinds_papers.py) through the runner: ObjectNet, ImageNet-C, ImageNet-O, SI-Score
and the Backgrounds Challenge, each on a miniature layout of its release, scored with a model whose predictions
are known, against values computed here by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.evaluate_images import ColourModel, save

from luab_fast._cli import DataError
from luab_fast.evaluate import REGISTRY, Options
from luab_fast.evaluate.kinds import imagenet_wnids
from luab_fast.evaluate.kinds_imagenet_c import ALEXNET_ERR
from luab_fast.evaluate.runner import LoaderSettings, score, split_loader

WNIDS = imagenet_wnids()
SETTINGS = LoaderSettings(batch_size=8, image_size=16, backend="torchvision", threads=2)


def run(kind: str, path: Path, options: Options = Options(), classes=WNIDS) -> dict:
    split = REGISTRY[kind].read(path, classes, options, "s")
    return score(ColourModel(len(classes)), split, split_loader(split, torch.device("cpu"), SETTINGS), len(classes))


def _objectnet(root: Path) -> Path:
    """Three ObjectNet folders; 'Alarm' overlaps ImageNet class 0, 'Banana' classes 17 and 18, 'Zebra' none."""
    maps = root / "mappings"
    maps.mkdir(parents=True)
    (maps / "folder_to_objectnet_label.json").write_text(json.dumps({"alarm": "Alarm", "banana": "Banana",
                                                                     "zebra_x": "Zebra"}))
    (maps / "objectnet_to_imagenet_1k.json").write_text(json.dumps({"Alarm": "name0", "Banana": "name17; name18"}))
    (maps / "imagenet_to_label_2012_v2").write_text("\n".join(f"name{k}" for k in range(1000)) + "\n")
    (maps / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({str(k): k for k in range(1000)}))
    for i, pred in enumerate([0, 17, 5]):  # alarm: right, wrong (banana), wrong (unmapped)
        save(root / "images" / "alarm" / f"{i}.png", pred)
    for i, pred in enumerate([18, 17, 0]):  # banana: right, right, wrong
        save(root / "images" / "banana" / f"{i}.png", pred)
    save(root / "images" / "zebra_x" / "0.png", 3)  # no ImageNet class: not scored
    return root


def test_objectnet_maps_imagenet_predictions_to_its_classes(tmp_path):
    out = run("objectnet", _objectnet(tmp_path / "objectnet-1.0"))
    assert (out["top1"], out["n"]) == (pytest.approx(3 / 6), 6)
    # top-5 [pred, 0, 1, 2, 3] maps to Alarm (class 0) every time: all alarm images, and no banana one gains
    assert out["top5"] == pytest.approx((3 + 2) / 6)
    # restricted to the mapped classes {0, 17, 18}: alarm's 5 → argmax over them is 0 (Alarm): right
    assert out["top1_restricted"] == pytest.approx(4 / 6)


def test_objectnet_missing_mapping_file_is_named(tmp_path):
    root = _objectnet(tmp_path / "on")
    (root / "mappings" / "pytorch_to_imagenet_2012_id.json").unlink()
    with pytest.raises(DataError, match="pytorch_to_imagenet_2012_id.json"):
        run("objectnet", root)


def test_objectnet_needs_the_imagenet_classes(tmp_path):
    with pytest.raises(DataError, match="not among the model's 3 classes"):
        run("objectnet", _objectnet(tmp_path / "on"), classes=tuple(WNIDS[:3]))


def test_imagenet_c_error_per_severity_and_ce_against_alexnet(tmp_path):
    root = tmp_path / "imagenet-c"
    wrong = {1: 0, 2: 1, 3: 1, 4: 2, 5: 2}  # wrong predictions of the 2 images per severity
    for s, n_wrong in wrong.items():
        for i in range(2):
            save(root / "gaussian_noise" / str(s) / WNIDS[7] / f"{i}.JPEG", 8 if i < n_wrong else 7)
    out = run("imagenet-c", root)
    errors = [wrong[s] / 2 for s in range(1, 6)]
    assert [out[f"error/gaussian_noise/{s}"] for s in range(1, 6)] == pytest.approx(errors)
    assert out["ce/gaussian_noise"] == pytest.approx(100 * sum(errors) / (5 * ALEXNET_ERR["gaussian_noise"]))
    assert (out["top1"], out["n"]) == (pytest.approx(1 - sum(errors) / 5), 10)
    assert "mce" not in out  # one of the 15 corruptions: no mean


def test_imagenet_c_relative_ce_subtracts_the_clean_error(tmp_path):
    root = tmp_path / "imagenet-c"
    for s in range(1, 6):
        save(root / "gaussian_noise" / str(s) / WNIDS[7] / "0.JPEG", 8)  # error 1 at every severity
    out = run("imagenet-c", root, Options(clean_error=0.25))
    from luab_fast.evaluate.kinds_imagenet_c import ALEXNET_CLEAN_ERR

    expected = 100 * (5 * (1 - 0.25)) / (5 * (ALEXNET_ERR["gaussian_noise"] - ALEXNET_CLEAN_ERR))
    assert out["relative_ce/gaussian_noise"] == pytest.approx(expected)


def test_imagenet_o_separates_unconfident_images(tmp_path):
    held = [WNIDS[3], WNIDS[9]]
    for i in range(3):  # ImageNet-O: predicted outside its two classes, so the softmax over them is flat
        save(tmp_path / "imagenet-o" / held[i % 2] / f"o{i}.jpg", 500 + i)
    for w, k in zip(held, (3, 9)):  # in-distribution: predicted as their class, a confident softmax
        for i in range(2):
            save(tmp_path / "val" / w / f"v{i}.JPEG", k)
    out = run("imagenet-o", tmp_path / "imagenet-o", Options(in_distribution=tmp_path / "val"))
    assert (out["aupr"], out["auroc"], out["n"], out["n_in"]) == (1.0, 1.0, 3, 4)
    with pytest.raises(DataError, match="--in-distribution"):
        run("imagenet-o", tmp_path / "imagenet-o")


def test_si_score_top1_overall_and_per_size(tmp_path):
    base = tmp_path / "object_size"
    (base).mkdir()
    (base / "foreground_classes.csv").write_text("imagenet_class,label\n7,bell pepper\n")
    rows = ["image_id,x_coord,y_coord,area,rotation,foreground_class"]
    for i, (area, pred) in enumerate([(0.1, 7), (0.1, 2), (0.5, 7), (0.5, 7)]):
        save(base / "bell pepper" / f"{i}.jpg", pred)
        rows.append(f"{i},0.5,0.5,{area},0,bell pepper")
    (base / "metadata.csv").write_text("\n".join(rows) + "\n")
    out = run("si-size", base)
    assert (out["top1"], out["top1/area=0.1"], out["top1/area=0.5"]) == (0.75, 0.5, 1.0)
    assert out["top1_group_mean"] == pytest.approx(0.75)


def test_backgrounds_per_variation_and_bg_gap(tmp_path):
    root = tmp_path / "bg_challenge"
    table = {str(k): -1 for k in range(1000)}
    table.update({str(k): k for k in range(9)})  # ImageNet class k < 9 is IN-9 class k
    (root).mkdir()
    (root / "in_to_in9.json").write_text(json.dumps(table))
    folders = [f"{k:02d}_class" for k in range(9)]
    for variation, preds in (("original", [0, 1]), ("mixed_same", [0, 5]), ("mixed_rand", [700, 5])):
        for k, folder in enumerate(folders):
            for i, p in enumerate(preds):  # image i of class k predicted as p + k when p < 9 (right iff p == 0)
                save(root / variation / "val" / folder / f"{i}.JPEG", p + k if p < 9 else p)
    out = run("backgrounds", root)
    assert (out["top1"], out["top1/mixed_same"], out["top1/mixed_rand"]) == (0.5, 0.5, 0.0)
    assert (out["bg_gap"], out["n"]) == (0.5, 18)


def test_backgrounds_without_the_in9_map_names_the_option(tmp_path):
    save(tmp_path / "bg" / "original" / "val" / "a" / "0.JPEG", 0)
    with pytest.raises(DataError, match="--in9-map"):
        run("backgrounds", tmp_path / "bg")
