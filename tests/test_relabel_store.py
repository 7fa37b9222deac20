"""The ReLabel label-map store: pack the release layout → open → gather, id lookup, per-file problems,
atomic writes, the CLI (pack / info / show), and `generate` on a tiny timm model round-tripping the store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures.stores import (
    MAP_CLASSES,
    MAP_SIZE,
    MAP_TOPK,
    RELEASE_WNIDS,
    byproduct_samples,
    release_map,
    write_label_map_release,
)

from luab_fast import _cli
from luab_fast.relabel import LabelMapStore, StoreError, pack_label_maps
from luab_fast.relabel import cli as relabel_cli

K, S, C = MAP_TOPK, MAP_SIZE, MAP_CLASSES


def main(argv):  # as `python -m luab_fast.relabel` runs it: errors become one line and a status
    return _cli.run(relabel_cli.main, argv)


@pytest.fixture
def release(tmp_path):
    return tmp_path / "src", write_label_map_release(tmp_path / "src")


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 2 ** -11)])
def test_pack_open_gather_round_trip(tmp_path, release, dtype, tol):
    src, maps = release
    res = pack_label_maps(src, tmp_path / "st", score_dtype=dtype, progress=False)
    assert res.rows == len(maps) and res.problems == []
    store = LabelMapStore.open(res.path)
    assert len(store) == 6 and (store.topk, store.size, store.num_classes) == (K, S, C)
    assert list(store.ids) == sorted(maps) and store.arrays["indices"].dtype == np.int16
    assert store.arrays["scores"].dtype == np.dtype(dtype)
    stems = ["n01443537_11", "n01440764_10", "n01440764_12"]
    rows = store.rows(stems)
    scores, idx = store.gather(rows)
    assert scores.shape == idx.shape == (3, K, S, S) and scores.dtype == torch.float32 and idx.dtype == torch.int64
    for b, stem in enumerate(stems):
        ref = maps[stem]
        assert torch.equal(idx[b], ref[1].long())
        err = ((scores[b] - ref[0]).abs() / ref[0].abs().clamp_min(1e-3)).max().item()
        assert err <= tol, f"{stem}: max relative error {err} > {tol}"
    empty_s, empty_i = store.gather([])
    assert empty_s.shape == (0, K, S, S) and empty_i.shape == (0, K, S, S)
    store.to("cpu")
    s2, i2 = store.gather(torch.as_tensor(rows))
    assert torch.equal(s2, scores) and torch.equal(i2, idx) and store.tensors()[1].dtype == torch.int16


def test_row_lookup(tmp_path, release):
    src, _ = release
    store = LabelMapStore.open(pack_label_maps(src, tmp_path / "st", progress=False).path)
    r = store.row("n01443537_10")
    assert store.ids[r] == "n01443537_10" and store.wnids[r] == "n01443537"
    assert store.row("train/n01443537/n01443537_10.JPEG") == r == store.row("n01443537/n01443537_10.pt")
    with pytest.raises(KeyError):
        store.row("n01443537_99")
    assert store.rows(["n01443537_10_and_much_longer", "x"]).tolist() == [-1, -1]
    with pytest.raises(IndexError, match="rows must be in"):
        store.gather([6])
    with pytest.raises(ValueError, match="integer"):
        store.gather(torch.tensor([0.5]))


def _bad(src):
    w = src / RELEASE_WNIDS[0]
    torch.save(torch.zeros(2, K, S), w / "bad_shape.pt")
    nan = release_map()
    nan[0, 0, 3, 4] = float("nan")
    torch.save(nan, w / "bad_nan.pt")
    oor = release_map()
    oor[1, 2, 0, 0] = C
    torch.save(oor, w / "bad_range.pt")
    frac = release_map()
    frac[1, 0, 1, 1] = 2.5
    torch.save(frac, w / "bad_frac.pt")
    (w / "bad_pickle.pt").write_bytes(b"not a pickle")
    torch.save(release_map(k=3), w / "bad_k.pt")
    dup = release_map()
    dup[1, 1, 2, 2] = dup[1, 0, 2, 2]
    torch.save(dup, w / "bad_dup.pt")
    huge = release_map()
    huge[0, 0, 0, 0] = 2.0 ** 23
    torch.save(huge, w / "bad_huge.pt")


def test_problems_reported_and_strict(tmp_path, release):
    src, maps = release
    _bad(src)
    res = pack_label_maps(src, tmp_path / "st", progress=False)
    assert res.rows == len(maps)
    reasons = {p.source.rsplit("/", 1)[-1]: p.reason for p in res.problems}
    assert set(reasons) == {"bad_shape.pt", "bad_nan.pt", "bad_range.pt", "bad_frac.pt", "bad_pickle.pt",
                            "bad_k.pt", "bad_dup.pt", "bad_huge.pt"}
    assert "repeated along K" in reasons["bad_dup.pt"] and "scores out of range" in reasons["bad_huge.pt"]
    assert reasons["bad_shape.pt"].startswith("wrong shape") and "non-finite" in reasons["bad_nan.pt"]
    assert "out of range" in reasons["bad_range.pt"] and "integral" in reasons["bad_frac.pt"]
    assert reasons["bad_pickle.pt"].startswith("unreadable") and "like the other maps" in reasons["bad_k.pt"]
    assert LabelMapStore.open(res.path).meta["problems"] == 8
    with pytest.raises(ValueError, match=r"bad_\w+\.pt"):
        pack_label_maps(src, tmp_path / "strict", strict=True, progress=False)
    assert not (tmp_path / "strict").exists()
    assert len(LabelMapStore.open(pack_label_maps(src, tmp_path / "c", num_classes=1001, progress=False).path)) == 7


def test_process_pool_matches_serial(tmp_path, release, monkeypatch):
    import luab_fast.relabel._pack as pack

    src, _ = release
    _bad(src)
    serial = pack_label_maps(src, tmp_path / "a", progress=False, workers=1)
    monkeypatch.setattr(pack, "PARALLEL_MIN", 0)
    pooled = pack_label_maps(src, tmp_path / "b", progress=False, workers=2)
    assert pooled.problems == serial.problems
    a, b = LabelMapStore.open(serial.path), LabelMapStore.open(pooled.path)
    for name in ("scores", "indices", "ids", "index", "wnids", "label"):
        assert np.array_equal(a.arrays[name], b.arrays[name]), name
    with pytest.raises(ValueError, match=r"bad_\w+\.pt"):
        pack_label_maps(src, tmp_path / "c", strict=True, progress=False, workers=2)


@pytest.mark.cuda
def test_gather_on_gpu(tmp_path, release):
    src, maps = release
    store = LabelMapStore.open(pack_label_maps(src, tmp_path / "st", progress=False).path)
    rows = store.rows(["n01443537_12", "n01440764_10"])
    ref = store.gather(rows)
    store.to("cuda")
    out = store.gather(torch.as_tensor(rows))
    assert all(o.device.type == "cuda" and torch.equal(o.cpu(), r) for o, r in zip(out, ref))
    assert store.tensors()[0].data_ptr() == store.to("cuda").tensors()[0].data_ptr()  # copied once


def test_atomic_write_and_bad_stores(tmp_path, release):
    src, _ = release
    dst = tmp_path / "out" / "st"
    pack_label_maps(src, dst, progress=False)
    pack_label_maps(src, dst, score_dtype="float16", progress=False)  # replaces the old store in place
    assert sorted(p.name for p in dst.parent.iterdir()) == ["st"]
    assert LabelMapStore.open(dst).meta["score_dtype"] == "float16"
    with pytest.raises(StoreError, match="not a luab_fast label-map store"):
        LabelMapStore.open(tmp_path)
    from luab_fast.byproducts import write_imagenet_store

    with pytest.raises(StoreError, match="expected 'luab_fast.relabel'"):
        LabelMapStore.open(write_imagenet_store(byproduct_samples(), tmp_path / "ab"))
    mf = dst / "manifest.json"
    mf.write_text(mf.read_text().replace('"version": 1', '"version": 0'))
    with pytest.raises(StoreError, match="checksum|version"):
        LabelMapStore.open(dst)
    with pytest.raises(ValueError, match="score_dtype"):
        pack_label_maps(src, tmp_path / "x", score_dtype="bfloat16", progress=False)
    with pytest.raises(ValueError, match="no valid label maps"):
        pack_label_maps(tmp_path / "out", tmp_path / "x", progress=False)


def test_cli_pack_info_show(tmp_path, release, capsys):
    src, maps = release
    _bad(src)
    dst = tmp_path / "st"
    assert main(["pack", str(src), str(dst), "--float16", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "packed 6 label maps" in out and "8 problem(s) skipped" in out and "non-finite" in out
    assert main(["pack", str(src), str(tmp_path / "s2"), "--strict", "--quiet"]) == 1
    assert "bad_" in capsys.readouterr().err and not (tmp_path / "s2").exists()
    assert main(["info", str(dst), "--verify"]) == 0
    info = capsys.readouterr().out
    assert "checksums: ok" in info and "float16" in info and "rows                 6" in info
    fig = tmp_path / "figs" / "fig.png"
    fig.parent.mkdir()
    assert main(["show", str(dst), "n01440764_11", "--out", str(fig)]) == 0
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "img.jpg")
    assert main(["show", str(dst), "n01440764_11", "--image", str(tmp_path / "img.jpg"),
                 "--out", str(tmp_path / "figs" / "over.png")]) == 0
    assert [p.read_bytes()[:4] for p in sorted(fig.parent.iterdir())] == [b"\x89PNG"] * 2
    assert main(["show", str(dst), "n00000000_0", "--out", str(fig)]) == 2
    assert "not in" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 1  # not a store: bad data (exit 1) since issue 17


def test_generate_tiny_model_round_trip(tmp_path):
    from PIL import Image

    from luab_fast.relabel.generate import dense_scores, load_model

    imgs = tmp_path / "imgs"
    for w, n in zip(RELEASE_WNIDS, (2, 1)):
        (imgs / w).mkdir(parents=True)
        for j in range(n):
            arr = np.random.randint(0, 255, (40 + 9 * j, 57, 3), np.uint8)
            Image.fromarray(arr).save(imgs / w / f"{w}_{j}.JPEG")
    out = tmp_path / "maps"
    assert main(["generate", "--model", "test_resnet", "--images", str(imgs), "--out", str(out), "--topk", "3",
                 "--size", "96", "--device", "cpu", "--quiet"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert files == ["n01440764", "n01440764/n01440764_0.pt", "n01440764/n01440764_1.pt", "n01443537",
                     "n01443537/n01443537_0.pt"]
    m = torch.load(out / "n01440764" / "n01440764_0.pt", weights_only=True)
    assert m.dtype == torch.float32 and m.shape == (2, 3, 3, 3)  # 96 px / stride 32
    assert (m[0][:-1] >= m[0][1:]).all() and torch.equal(m[1], m[1].round())
    # the per-location head equals the classifier as a 1x1 convolution over the last feature map
    net = load_model("test_resnet")
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        f, fc = net.forward_features(x), net.get_classifier()
        ref = torch.nn.functional.conv2d(f, fc.weight[:, :, None, None], fc.bias)
        torch.testing.assert_close(dense_scores(net, x), ref, rtol=1e-5, atol=1e-5)
    ckpt = tmp_path / "ck.pth"
    torch.save({"arch": "test_resnet", "state_dict": net.state_dict()}, ckpt)
    assert torch.equal(load_model(str(ckpt)).fc.weight, net.fc.weight)
    res = pack_label_maps(out, tmp_path / "st", progress=False)
    store = LabelMapStore.open(res.path)
    s, i = store.gather([store.row("n01440764_0")])
    assert res.problems == [] and len(store) == 3 and torch.equal(s[0], m[0]) and torch.equal(i[0], m[1].long())
