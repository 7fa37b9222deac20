"""The packed ImageNet-AB store: round trip, O(1) id lookup, ragged accessors, hand-computed point targets
for crops that include, exclude and straddle the click (with and without flips), corrupt stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures.stores import byproduct_samples

from luab_fast.byproducts import ByproductStore, ImageNetSample, StoreError, write_imagenet_store


@pytest.fixture
def store(tmp_path):
    return ByproductStore.open(write_imagenet_store(byproduct_samples(), tmp_path / "ab.store"))


def test_round_trip_lookup_and_ragged_accessors(store, tmp_path):
    assert len(store) == 4 and list(store.ids) == [s.image_id for s in byproduct_samples()]
    assert store.row("n01440764_18") == 1 and store.row("n01443537_7") == 3
    assert store.row("train/n01440764/n01440764_18.JPEG") == 1 == store.row("train_xml/n01440764/n01440764_18.xml")
    with pytest.raises(KeyError):
        store.row("n01440764_18" * 5)  # longer than any stored id
    with pytest.raises(KeyError):
        store.row("n09999999_1")
    np.testing.assert_array_equal(store.rows(["n01443537_2", "nope", "n01440764_10026"]), [2, -1, 0])
    xy, t = store.trace(1)
    np.testing.assert_allclose(xy, [[0.4, 0.4], [0.3, 0.3], [0.35, 0.3]], rtol=0, atol=1e-7)
    assert t.dtype == np.int64 and len(t) == 3
    cxy, _ = store.clicks(1)
    np.testing.assert_allclose(cxy, [[0.5, 0.5], [0.3, 0.1], [0.9, 0.9]], atol=1e-7)
    assert store.trace(0)[0][2, 0] == pytest.approx(1.003)  # out-of-range points are kept as released
    np.testing.assert_array_equal(store.boxes(1), [[100, 50, 400, 300]])
    assert store.size(1) == (500, 375) and store.size(0) == (500, 375)  # minimal file: original size of record
    assert len(store.trace(3)[0]) == 0 and len(store.boxes(0)) == 0
    with pytest.raises(IndexError):
        store.trace(4)
    store.verify()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directories left behind"


def test_lookup_scales_to_many_ids(tmp_path):
    samples = [ImageNetSample(f"n{k % 1000:08d}_{k}", f"n{k % 1000:08d}") for k in range(20_000)]
    st = ByproductStore.open(write_imagenet_store(samples, tmp_path / "big.store"))
    rng = np.random.default_rng(0)
    pick = rng.integers(0, 20_000, 500)
    np.testing.assert_array_equal(st.rows([samples[k].image_id for k in pick]), pick)
    assert st.row(samples[12_345].image_id) == 12_345


# crops (x0, y0, x1, y1), flip → expected crop point and weight for sample 1's click (0.4, 0.3)
CASES = [
    ((0.0, 0.0, 1.0, 1.0), False, (0.4, 0.3), 1.0),
    ((0.0, 0.0, 1.0, 1.0), True, (0.6, 0.3), 1.0),
    ((0.2, 0.2, 0.6, 0.4), False, (0.5, 0.5), 1.0),  # (0.4−0.2)/0.4, (0.3−0.2)/0.2
    ((0.2, 0.2, 0.6, 0.4), True, (0.5, 0.5), 1.0),
    ((0.3, 0.0, 0.5, 1.0), True, (0.5, 0.3), 1.0),   # u = (0.4−0.3)/0.2 = 0.5 → flipped 0.5
    ((0.5, 0.0, 1.0, 1.0), False, (-1.0, -1.0), 0.0),  # click left of the crop
    ((0.0, 0.35, 1.0, 1.0), True, (-1.0, -1.0), 0.0),  # click above the crop
    ((0.4, 0.3, 0.8, 0.9), False, (0.0, 0.0), 1.0),    # on the corner: inside (inclusive)
]


@pytest.mark.parametrize("box, flip, point, weight", CASES)
def test_point_targets_hand_computed(store, box, flip, point, weight):
    rows = torch.tensor([1, 2, 3])
    boxes = torch.tensor([box, (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0)], dtype=torch.float32)
    flips = torch.tensor([flip, False, True])
    pts, w = store.point_targets(rows, boxes, flips)
    torch.testing.assert_close(pts[0], torch.tensor(point), rtol=0, atol=1e-6)
    assert w.tolist() == [weight, 0.0, 0.0]  # rows 2, 3 have no click
    assert pts[1:].eq(-1).all()


def test_point_targets_bad_input_names_the_argument(store):
    ok = dict(rows=torch.tensor([0]), boxes=torch.tensor([[0.0, 0.0, 1.0, 1.0]]), flips=torch.tensor([False]))
    for arg, bad, msg in [("rows", torch.tensor([7]), "rows must be in"), ("boxes", torch.zeros(1, 3), "boxes must"),
                          ("flips", torch.tensor([1]), "flips must"),
                          ("boxes", torch.tensor([[0.5, 0.0, 0.4, 1.0]]), "x0 < x1")]:
        with pytest.raises(ValueError, match=msg):
            store.point_targets(**{**ok, arg: bad})


def test_traces_for_packs_a_batch(store):
    pts, times, off = store.traces_for(torch.tensor([1, 3, 0]))
    assert off.tolist() == [0, 3, 3, 6]
    torch.testing.assert_close(pts[:3], torch.tensor(store.trace(1)[0]))
    torch.testing.assert_close(pts[3:], torch.tensor(store.trace(0)[0]))
    assert times.dtype == torch.int64


def test_corrupt_or_foreign_stores_give_clear_errors(store, tmp_path):
    with pytest.raises(StoreError, match="not a luab_fast store"):
        ByproductStore.open(tmp_path)
    mf = store.path / "manifest.json"
    doc = json.loads(mf.read_text())
    doc["version"] = 0
    mf.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="checksum"):
        ByproductStore.open(store.path)
    (store.path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        ByproductStore.open(store.path)


def test_flipped_bytes_fail_verify(tmp_path):
    st = ByproductStore.open(write_imagenet_store(byproduct_samples(), tmp_path / "s"))
    path = st.path / "trace_xy.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    del st
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="trace_xy"):
        ByproductStore.open(tmp_path / "s").verify()


def test_older_version_is_refused_with_the_fix(tmp_path):
    from luab_fast._store.format import write_store
    from luab_fast.byproducts.store import FORMAT

    write_store(tmp_path / "old", FORMAT, 0, {"ids": np.zeros(0, "S1")}, {"kind": "imagenet"})
    with pytest.raises(StoreError, match="version 0.*re-pack"):
        ByproductStore.open(tmp_path / "old")


@pytest.mark.cuda
def test_gpu_targets_equal_cpu(store):
    rows, flips = torch.tensor([1, 0, 2, 3]), torch.tensor([True, False, False, True])
    boxes = torch.tensor([[0.1, 0.1, 0.9, 0.9], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.2, 0.0, 0.4, 0.3]])
    cpu = store.point_targets(rows, boxes, flips)
    gpu = store.point_targets(rows.cuda(), boxes.cuda(), flips.cuda())
    assert gpu[0].is_cuda
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=0, atol=0)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=0, atol=0)
    for a, b in zip(store.traces_for(rows.cuda()), store.traces_for(rows)):
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0)
