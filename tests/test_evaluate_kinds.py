"""Each kind of luab_fast.evaluate on a miniature split in its exact public layout, scored with a model whose
predictions are known (the image's colour encodes its predicted class), against values computed here by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.evaluate_images import IMAGES, TOP1, TOP5, ColourModel, save, top5

from luab_fast._cli import DataError
from luab_fast.evaluate import REGISTRY, Options
from luab_fast.evaluate.kinds import imagenet_wnids
from luab_fast.evaluate.runner import LoaderSettings, score, split_loader

WNIDS = imagenet_wnids()
SETTINGS = LoaderSettings(batch_size=4, image_size=16, backend="torchvision", threads=2)


def run(kind: str, path: Path, options: Options = Options(), classes=WNIDS) -> dict:
    split = REGISTRY[kind].read(path, classes, options, "s")
    return score(ColourModel(len(classes)), split, split_loader(split, torch.device("cpu"), SETTINGS), len(classes))


@pytest.fixture
def layouts(tmp_path):
    """The same images as wnid folders, as ImageNetV2's index folders, and flat with their numbers."""
    for i, (true, pred) in enumerate(IMAGES, 1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        save(tmp_path / "folders" / WNIDS[true] / name, pred)
        save(tmp_path / "v2" / str(true) / f"{i}.jpeg", pred)
        save(tmp_path / "flat" / name, pred)
    return tmp_path


def test_colour_model_predicts_the_encoded_class(layouts):
    split = REGISTRY["imagenet"].read(layouts / "folders", WNIDS, Options(), "s")
    batch = next(iter(split_loader(split, torch.device("cpu"), SETTINGS)))
    got = ColourModel()(batch["images"]).topk(5, 1).indices.tolist()
    assert got == [top5(p) for _, p in IMAGES[:4]]


def test_imagenet_folders_top1_top5_and_per_class(layouts):
    out = run("imagenet", layouts / "folders")
    assert (out["top1"], out["top5"], out["n"]) == (pytest.approx(TOP1), pytest.approx(TOP5), 7)
    assert out["per_class"] == {WNIDS[0]: 0.5, WNIDS[17]: round(2 / 3, 4), WNIDS[900]: 0.5}


def test_v2_index_folders_score_as_the_same_images_in_wnid_folders(layouts):
    v2 = run("v2", layouts / "v2")
    assert (v2["top1"], v2["top5"]) == (pytest.approx(TOP1), pytest.approx(TOP5))


def test_sketch_is_wnid_folders(layouts):
    assert run("sketch", layouts / "folders")["top1"] == pytest.approx(TOP1)


def test_flat_val_with_kaggle_loc_solution(layouts):
    rows = ["ImageId,PredictionString"] + [f"ILSVRC2012_val_{i:08d},{WNIDS[t]} 1 2 30 40 {WNIDS[t]} 5 5 9 9"
                                           for i, (t, _) in enumerate(IMAGES, 1)]
    (layouts / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")  # above the folder, as Kaggle's archive
    out = run("imagenet", layouts / "flat")
    assert (out["top1"], out["top5"]) == (pytest.approx(TOP1), pytest.approx(TOP5))


def _devkit(folder: Path, truth: dict[int, int]) -> Path:
    """The devkit's data/: meta.mat whose ILSVRC2012_IDs run in reverse wnid order (the devkit's own order is not
    the sorted one either), one non-leaf synset, and the ground truth in those ids."""
    from scipy.io import savemat

    data = folder / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    rows = [(1000 - k, WNIDS[k], 0) for k in range(1000)] + [(1001, "n00001740", 5)]
    synsets = np.array(rows, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    savemat(str(data / "meta.mat"), {"synsets": synsets})
    ids = [1000 - truth.get(n, 0) for n in range(1, 50_001)]
    gt = data / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("\n".join(map(str, ids)) + "\n")
    return gt


def test_flat_val_with_devkit_ground_truth_in_the_devkits_class_order(layouts):
    _devkit(layouts, {i: t for i, (t, _) in enumerate(IMAGES, 1)})
    out = run("imagenet", layouts / "flat")
    assert (out["top1"], out["top5"]) == (pytest.approx(TOP1), pytest.approx(TOP5))


def test_devkit_without_meta_mat_is_refused(layouts):
    gt = _devkit(layouts, {})
    (gt.parent / "meta.mat").unlink()
    with pytest.raises(DataError, match="meta.mat"):
        run("imagenet", layouts / "flat", Options(val_labels=gt))


def test_flat_val_without_labels_names_the_files_it_needs(layouts):
    with pytest.raises(DataError, match="LOC_val_solution.csv"):
        run("imagenet", layouts / "flat")


def _real(folder: Path, lists: dict[int, list[int]]) -> Path:
    path = folder / "real.json"
    path.write_text(json.dumps([lists.get(n, []) for n in range(1, 50_001)]))
    return path


def test_real_with_the_true_label_alone_is_plain_top1(layouts):
    _real(layouts / "flat", {i: [t] for i, (t, _) in enumerate(IMAGES, 1)})
    out = run("real", layouts / "flat")
    assert (out["top1"], out["top5"], out["n"]) == (pytest.approx(TOP1), pytest.approx(TOP5), 7)


def test_real_counts_any_listed_label_and_leaves_out_empty_lists(layouts):
    # image 2 (predicted 7) gains 7; image 5 (predicted 3) has no list: left out; image 7 (predicted 0) lists 900
    lists = {i: [t] for i, (t, _) in enumerate(IMAGES, 1) if i != 5}
    lists[2] = [0, 7]
    real = _real(layouts, lists)  # beside the folder, given by --real-labels
    out = run("real", layouts / "flat", Options(real_labels=real))
    assert (out["top1"], out["n"]) == (pytest.approx(5 / 6), 6)


def test_real_json_of_the_wrong_length_names_the_file(layouts):
    (layouts / "flat" / "real.json").write_text(json.dumps([[0]] * 100))
    with pytest.raises(DataError, match=r"real\.json.*50,000.*list of 100"):
        run("real", layouts / "flat")


def test_real_json_missing_is_named(layouts):
    with pytest.raises(DataError, match=r"real\.json.*--real-labels"):
        run("real", layouts / "flat")


def test_multilabel_scores_the_annotated_unproblematic_subset(layouts):
    ids = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 8)]
    correct = {ids[0]: [WNIDS[0]], ids[1]: [WNIDS[0], WNIDS[7]], ids[2]: [WNIDS[17]], ids[4]: [WNIDS[17]],
               ids[5]: [WNIDS[900]], ids[6]: [WNIDS[900]]}
    data = {"labeled_images": list(correct) + ["n01440764_1.JPEG"],  # a V2 candidate: left out
            "image_labels": {k: {"correct": v, "unclear": [], "wrong": []} for k, v in correct.items()},
            "image_map": {k: {"id": k, "problematic": k == ids[6]} for k in correct}}
    data["image_labels"]["n01440764_1.JPEG"] = {"correct": [WNIDS[0]]}
    data["image_map"]["n01440764_1.JPEG"] = {"problematic": False}
    (layouts / "flat" / "human_accuracy.json").write_text(json.dumps(data))
    out = run("multilabel", layouts / "flat")
    # annotated, not problematic: images 1, 2, 3, 5, 6; correct: 1 (0), 2 (7 is correct too), 3 (17), 6 (900)
    assert (out["top1"], out["n"]) == (pytest.approx(4 / 5), 5)


def test_multilabel_pickle_of_plain_data_is_read_and_code_is_refused(layouts, tmp_path):
    import pickle

    ann = {"labeled_images": ["ILSVRC2012_val_00000003"],
           "image_labels": {"ILSVRC2012_val_00000003": {"correct": {WNIDS[17]}}},
           "image_map": {"ILSVRC2012_val_00000003": {"problematic": False}}}
    (layouts / "flat" / "human_accuracy.pickle").write_bytes(pickle.dumps(ann))
    assert run("multilabel", layouts / "flat") == {"top1": 1.0, "top5": 1.0, "n": 1}
    bad = tmp_path / "bad.pickle"
    bad.write_bytes(pickle.dumps({"labeled_images": [Path("x")]}))
    with pytest.raises(DataError, match="bad.pickle.*plain data"):
        run("multilabel", layouts / "flat", Options(multilabel_labels=bad))


@pytest.mark.parametrize("kind", ["r", "a"])
def test_restricted_logits_score_as_computed_and_never_lower_top1(layouts, kind):
    plain = run("imagenet", layouts / "folders")
    masked = run(kind, layouts / "folders")
    # within {0, 17, 900}: row 1 (predicted 7) → 0 right; row 4 (3) → 0 wrong; row 6 (0) stays wrong: 5 of 7
    assert masked["top1"] == pytest.approx(5 / 7)
    assert masked["top1"] >= plain["top1"]
    assert masked["top5"] == 1.0  # three classes: every label is in the top 3


def test_restricted_logits_take_the_split_folders_classes(layouts):
    split = REGISTRY["r"].read(layouts / "folders", WNIDS, Options(), "s")
    assert split.mask.tolist() == [0, 17, 900]
    assert REGISTRY["imagenet"].read(layouts / "folders", WNIDS, Options(), "s").mask is None


def test_a_split_with_classes_the_model_lacks_is_refused(layouts):
    with pytest.raises(DataError, match=r"--split s=imagenet:.*1 class\(es\) are not among the model's 2 classes"):
        run("imagenet", layouts / "folders", classes=(WNIDS[0], WNIDS[17]))


def test_v2_folders_must_be_class_indices(layouts):
    (layouts / "v2" / "n01440764").mkdir()
    with pytest.raises(DataError, match="0..999.*n01440764"):
        run("v2", layouts / "v2")


def test_unreadable_images_are_named(layouts):
    bad = layouts / "folders" / WNIDS[0] / "ILSVRC2012_val_00000099.JPEG"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="ILSVRC2012_val_00000099.JPEG"):
        run("imagenet", layouts / "folders")


def test_real_accepts_wnid_folders_of_validation_images(layouts):
    _real(layouts / "folders", {i: [t] for i, (t, _) in enumerate(IMAGES, 1)})
    assert run("real", layouts / "folders")["top1"] == pytest.approx(TOP1)
