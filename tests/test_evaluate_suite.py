"""``--suite imagenet ROOT`` on miniature ROOTs: every kind found under each of its standard folder names, all at
once, and ``loc`` wherever the val folder's boxes are (LOC_val_solution.csv, Kaggle's XML folder, XML beside
the images); scored end to end with a timm model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.evaluate_images import save

from luab_fast import _cli
from luab_fast.evaluate import REGISTRY
from luab_fast.evaluate.cli import main
from luab_fast.evaluate.kinds import imagenet_wnids
from luab_fast.evaluate.splits import suite

WNIDS = imagenet_wnids()
NAMED = [(kind.name, n) for kind in REGISTRY.values() for n in kind.suite_names]
BOX = "0 0 12 10"


def test_every_kind_has_standard_names_or_is_found_beside_val():
    beside = {k for k, kind in REGISTRY.items() if not kind.suite_names}
    assert beside == {"real", "multilabel", "loc"}  # found from the val folder and their label files


@pytest.mark.parametrize("kind, name", NAMED, ids=[f"{k}:{n}" for k, n in NAMED])
def test_each_kind_is_found_under_each_of_its_names(tmp_path, kind, name):
    (tmp_path / name).mkdir(parents=True)
    found, _ = suite("imagenet", tmp_path)
    assert (kind, kind, tmp_path / name) in found


def _val(folder: Path, n: int = 2) -> list[str]:
    """ImageNet val in wnid folders; the image ids."""
    ids = []
    for i in range(1, n + 1):
        ids.append(f"ILSVRC2012_val_{i:08d}")
        save(folder / WNIDS[17 * (i % 2)] / f"{ids[-1]}.JPEG", 0)
    return ids


def _csv(path: Path, ids: list[str]) -> Path:
    rows = ["ImageId,PredictionString"] + [f"{i},{WNIDS[17 * (k % 2)]} {BOX}" for k, i in enumerate(ids, 1)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _xml(folder: Path, ids: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        (folder / f"{i}.xml").write_text("<annotation><size><width>24</width><height>20</height></size><object>"
                                         "<name>n</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>12</xmax>"
                                         "<ymax>10</ymax></bndbox></object></annotation>")


def test_a_root_holding_every_standard_folder_finds_every_kind(tmp_path):
    for kind in REGISTRY.values():
        if kind.suite_names:
            (tmp_path / kind.suite_names[0]).mkdir(parents=True, exist_ok=True)
    ids = _val(tmp_path / "val")
    (tmp_path / "real.json").write_text("[]")
    (tmp_path / "val" / "human_accuracy.json").write_text("{}")
    csv = _csv(tmp_path / "LOC_val_solution.csv", ids)
    found, files = suite("imagenet", tmp_path)
    assert sorted(k for _, k, _ in found) == sorted(REGISTRY)
    assert all(name == kind for name, kind, _ in found)  # each split is named after its kind
    val = tmp_path / "val"
    assert {k: p for _, k, p in found if k in ("imagenet", "real", "multilabel", "loc")} == \
        {"imagenet": val, "real": val, "multilabel": val, "loc": val}
    assert files == {"in_distribution": val, "real": tmp_path / "real.json",
                     "multilabel": val / "human_accuracy.json", "boxes": csv}


@pytest.mark.parametrize("where", ["csv in val", "csv in root", "kaggle xml folder", "xml beside images"])
def test_loc_is_found_where_its_boxes_lie(tmp_path, where):
    val = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"  # Kaggle's layout: 4 folders below ROOT
    ids = _val(val)
    expected = {"csv in val": val / "LOC_val_solution.csv", "csv in root": tmp_path / "LOC_val_solution.csv",
                "kaggle xml folder": tmp_path / "ILSVRC" / "Annotations" / "CLS-LOC" / "val",
                "xml beside images": None}[where]
    if where.startswith("csv"):
        _csv(expected, ids)
    elif expected is not None:
        _xml(expected, ids)
    else:
        for d in val.iterdir():
            _xml(d, [f.stem for f in d.glob("*.JPEG")])
    found, files = suite("imagenet", tmp_path)
    assert ("loc", "loc", val) in found
    assert files.get("boxes") == expected


@pytest.mark.parametrize("layout", ["no boxes", "flat val"])
def test_no_loc_without_boxes_or_wnid_folders(tmp_path, layout):
    if layout == "flat val":  # loc reads wnid folders; a flat val folder is scored as imagenet only
        save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", 0)
        _csv(tmp_path / "LOC_val_solution.csv", ["ILSVRC2012_val_00000001"])
    else:
        _val(tmp_path / "val")
    found, files = suite("imagenet", tmp_path)
    assert [k for _, k, _ in found] == ["imagenet"] and "boxes" not in files


def test_suite_scores_loc_with_a_timm_models_cam(tmp_path, capsys):
    import timm

    root = tmp_path / "root"
    val = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    _csv(root / "LOC_val_solution.csv", _val(val, 4))
    weights = tmp_path / "w.pth"
    torch.save(timm.create_model("resnet10t", num_classes=2).state_dict(), weights)
    cmap = tmp_path / "classes.txt"
    cmap.write_text(f"{WNIDS[0]}\n{WNIDS[17]}\n")
    out = tmp_path / "out"
    status = _cli.run(main, ["--model", "resnet10t", "--pretrained-path", str(weights), "--class-map", str(cmap),
                             "--image-size", "32", "--suite", "imagenet", str(root), "--out", str(out), "--device",
                             "cpu", "--backend", "torchvision", "--workers", "1", "--batch-size", "2"])
    cap = capsys.readouterr()
    assert status == 0, cap.out + cap.err
    splits = json.loads((out / "results.json").read_text())["models"][0]["splits"]
    assert {k: (v["kind"], v["n"]) for k, v in splits.items()} == {"imagenet": ("imagenet", 4), "loc": ("loc", 4)}
    assert 0.0 <= splits["loc"]["maxboxacc"] <= 1.0
    assert (splits["imagenet"]["transform"]["crop_fraction"], splits["loc"]["transform"]["crop_fraction"]) == \
        (0.875, 1.0)
