"""The packed COCO-AB store on the doc's fixture: last record of an image id wins for lookup, last `add`
per class is the point (move/remove ignored), and the official loader's crop-aware label masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.coco_ab import write_coco_ab_fixture

from luab_fast.byproducts import CocoByproductStore, StoreError, write_coco_store
from luab_fast.byproducts.coco_ab import read_coco_ab

PERSON, CAKE, GIRAFFE, CUP, TABLE = 0, 55, 23, 41, 60


@pytest.fixture
def store(tmp_path):
    fx = write_coco_ab_fixture(tmp_path / "fx")
    return CocoByproductStore.open(write_coco_store(read_coco_ab(fx["path"]), tmp_path / "coco.store"))


def test_rows_ids_and_last_record_wins(store):
    assert len(store) == 3 and store.ids.tolist() == [9, 25, 9]
    assert store.row(9) == 2 and store.row(25) == 1  # the duplicate's last record
    np.testing.assert_array_equal(store.rows([25, 7, 9]), [1, -1, 2])
    with pytest.raises(KeyError):
        store.row(10)
    xy, t = store.trace(0)
    assert xy.shape == (3, 2) and t.tolist() == [1203, 1211, 1250]
    assert len(store.trace(1)[0]) == 0


def test_last_add_point_per_class(store):
    pts = store.arrays["add_points"]
    np.testing.assert_allclose(pts[0, PERSON], [0.23, 0.56], atol=1e-7)
    np.testing.assert_allclose(pts[0, CAKE], [0.6111111, 0.72], atol=1e-6)  # the add, not the later move
    assert np.isnan(pts[0, CUP]).all()  # only removed: never added here
    np.testing.assert_allclose(pts[1, GIRAFFE], [0.5, 0.45], atol=1e-7)
    np.testing.assert_allclose(pts[2, TABLE], [0.5, 0.8], atol=1e-7)  # added then removed: the add counts


def _gt(*classes, b=1):
    g = torch.zeros(b, 80, dtype=torch.bool)
    g[:, list(classes)] = True
    return g


@pytest.mark.parametrize("box, flip, label, yx", [
    ((0.0, 0.0, 1.0, 1.0), False, 1.0, (0.56, 0.23)),
    ((0.0, 0.0, 1.0, 1.0), True, 1.0, (0.56, 0.77)),
    ((0.2, 0.5, 0.3, 0.6), False, 1.0, (0.6, 0.3)),   # ((0.56−0.5)/0.1, (0.23−0.2)/0.1)
    ((0.5, 0.0, 1.0, 1.0), False, 0.0, (-1.0, -1.0)),  # the point is outside: label masked to 0
])
def test_person_target_hand_computed(store, box, flip, label, yx):
    target, points = store.coco_targets(torch.tensor([0]), torch.tensor([box]), torch.tensor([flip]),
                                        _gt(PERSON, GIRAFFE))
    assert target[0, PERSON] == label
    torch.testing.assert_close(points[0, 2 * PERSON:2 * PERSON + 2], torch.tensor(yx), rtol=0, atol=1e-5)
    # a GT class the worker placed no icon for: label 1, point −1; a class not in GT: 0, −1
    assert target[0, GIRAFFE] == 1 and points[0, 2 * GIRAFFE:2 * GIRAFFE + 2].eq(-1).all()
    assert target[0, CAKE] == 0 and points[0, 2 * CAKE:2 * CAKE + 2].eq(-1).all()


def test_bad_targets_input_and_wrong_kind(store, tmp_path):
    with pytest.raises(ValueError, match="gt_classes must be a bool"):
        store.coco_targets(torch.tensor([0]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([False]),
                           torch.zeros(1, 79, dtype=torch.bool))
    with pytest.raises(ValueError, match="rows must be in"):
        store.coco_targets(torch.tensor([3]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([False]), _gt(0))
    from luab_fast.byproducts import ByproductStore

    with pytest.raises(StoreError, match="holds 'coco'"):
        ByproductStore.open(store.path)
