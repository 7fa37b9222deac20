"""--aa with --label-maps: a geometric augmentation pools each image's ReLabel map over the part of its crop
the augmented image shows (augment_targets.pooling_boxes), and training runs with label maps, byproducts and
random erasing together."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from luab_fast.data.augment_targets import pooling_boxes


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


@pytest.fixture(scope="module")
def maps(demo, tmp_path_factory):
    """A ReLabel-format store for the demo's train images: the left half of every map scores class
    (label + 1) % 10, the right half the image's own class, so where a crop is pooled decides the target."""
    from luab_fast.data.source import list_images
    from luab_fast.relabel import pack_label_maps

    images = list_images(demo.train)
    src = tmp_path_factory.mktemp("maps")
    for path, label in zip(images.files, images.labels.tolist()):
        scores = torch.tensor([5.0, 1.0]).view(2, 1, 1).expand(2, 4, 4)
        first = torch.full((4, 4), float(label))
        first[:, :2] = (label + 1) % 10
        second = torch.where(first == label, float((label + 2) % 10), float(label))
        (src / images.classes[label]).mkdir(exist_ok=True)
        torch.save(torch.stack([scores, torch.stack([first, second])]).contiguous(),
                   src / images.classes[label] / f"{Path(path).stem}.pt")
    res = pack_label_maps(src, src.parent / "maps.store", num_classes=10, progress=False)
    assert res.problems == []
    return res.path, images


def test_label_maps_are_pooled_over_what_the_augmented_image_shows(maps):
    from luab_fast.data.targets import Targets
    from luab_fast.ops import label_pool_targets
    from luab_fast.relabel import LabelMapStore

    store_path, images = maps
    t = Targets(images, torch.device("cpu"), label_maps=store_path)
    rows = torch.tensor([0, 7, 40, 41])
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(4, 1)
    flips = torch.tensor([False, False, True, True])
    # the output shows crop x in [0, 0.45] (left) for the first of each pair, [0.55, 1] (right) for the second
    inverse = torch.tensor([[[1.0, 0.0, -0.55], [0.0, 1.0, 0.0]], [[1.0, 0.0, 0.55], [0.0, 1.0, 0.0]]]).repeat(2, 1, 1)
    batch = {"rows": rows, "boxes": boxes, "flips": flips, "labels": torch.from_numpy(images.labels)[rows]}
    out = t(batch, {"inverse": inverse})["target"]
    store = LabelMapStore.open(store_path).to("cpu")
    srows = torch.from_numpy(store.rows([images.stems[r] for r in rows.tolist()]))
    shown = pooling_boxes(boxes, flips, inverse)
    torch.testing.assert_close(out, label_pool_targets(*store.tensors(), shown, 10, rows=srows))
    label = torch.from_numpy(images.labels)[rows]
    # crop-left of an unflipped image is the map's left; of a flipped one, the map's right
    left_of_map = torch.tensor([True, False, False, True])
    want = torch.where(left_of_map, (label + 1) % 10, label)
    assert torch.equal(out.argmax(1), want)
    plain = t(batch)["target"]  # without the affine: the whole crop, both halves
    assert not torch.allclose(plain, out)


def test_training_with_label_maps_byproducts_aa_and_erasing(demo, maps, tmp_path):
    from luab_fast.train.run import main

    store_path, _ = maps
    assert main(["--data", str(demo.train), "--label-maps", str(store_path), "--byproducts", str(demo.store),
                 "--out", str(tmp_path / "o"), "--device", "cpu", "--backend", "dali", "--batch-size", "16",
                 "--image-size", "32", "--no-compare", "--max-steps", "2", "--aa", "rand-m9-mstd0.5",
                 "--reprob", "0.25"]) == 0
    assert (tmp_path / "o" / "metrics.json").exists()
