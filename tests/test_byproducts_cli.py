"""python -m luab_fast.byproducts info / show on a packed store; errors on bad stores and ids."""

from __future__ import annotations

import numpy as np
from fixtures.stores import byproduct_samples

from luab_fast import _cli
from luab_fast.byproducts import cli as byproducts_cli
from luab_fast.byproducts import write_imagenet_store


def main(argv):  # as `python -m luab_fast.byproducts` runs it: errors become one line and a status
    return _cli.run(byproducts_cli.main, argv)


def test_info_prints_statistics(tmp_path, capsys):
    path = write_imagenet_store(byproduct_samples(), tmp_path / "s")
    assert main(["info", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "checksums: ok" in out
    stats = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:] if line.strip()}
    assert stats["samples"] == ["4"] and stats["records"] == ["4"] and stats["trace_points"] == ["6"]
    assert stats["samples_with_click_target"] == ["2"] and stats["trace_points_out_of_range"] == ["1"]


def test_show_draws_a_png_atomically(tmp_path, capsys):
    path = write_imagenet_store(byproduct_samples(), tmp_path / "s")
    out = tmp_path / "fig.png"
    assert main(["show", str(path), "n01440764_18", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 5_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "s"]


def test_errors_are_clear(tmp_path, capsys):
    path = write_imagenet_store(byproduct_samples(), tmp_path / "s")
    assert main(["show", str(path), "n00000000_0", "--out", str(tmp_path / "x.png")]) == 2
    assert "not in" in capsys.readouterr().err
    assert main(["info", str(tmp_path)]) == 1  # not a store: bad data (exit 1) since issue 17
    assert "not a luab_fast store" in capsys.readouterr().err
    assert main(["pack", str(tmp_path / "missing.tar.gz"), str(tmp_path / "d")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_coco_pack_info_show(tmp_path, capsys):
    from fixtures.coco_ab import write_coco_ab_fixture

    fx = write_coco_ab_fixture(tmp_path / "fx")
    dst = tmp_path / "coco.store"
    assert main(["pack", str(fx["path"]), str(dst), "--quiet"]) == 0
    assert "packed 3 records" in capsys.readouterr().out
    assert main(["info", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "coco byproduct store" in out and "add_move_remove" in out and "5 / 1 / 2" in out
    png = tmp_path / "c.png"
    assert main(["show", str(dst), "9", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["pack", str(fx["path"]), str(tmp_path / "last.store"), "--quiet", "--duplicates", "last"]) == 0
    assert "packed 2 records" in capsys.readouterr().out


def test_imagenet_pack_from_tar_and_directory_then_targets(tmp_path, capsys):
    import torch
    from fixtures.imagenet_ab import write_imagenet_ab_fixture

    from luab_fast.byproducts import ByproductStore

    fx = write_imagenet_ab_fixture(tmp_path / "fx")
    sources = ((fx["tar"], "tar.store"), (fx["train_xml_root"], "dir.store"), (fx["enriched_root"], "enr.store"))
    for src, name in sources:
        assert main(["pack", str(src), str(tmp_path / name), "--quiet"]) == 0
        assert "packed 3 files" in capsys.readouterr().out  # the ._ junk member is skipped
        store = ByproductStore.open(tmp_path / name)
        assert sorted(store.ids) == sorted(fx["image_ids"][:3])
    # n01440764_18: two selected records, first clicks (0.5, 0.5) and the first of two → their mean
    i = store.row("n01440764_18")
    want = np.mean([fx["expected"]["n01440764_18"].records[k].click_xy[0] for k in range(2)], 0)
    pts, w = store.point_targets(torch.tensor([i]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([False]))
    np.testing.assert_allclose(pts[0].numpy(), want, atol=1e-6)
    assert w.tolist() == [1.0]
    assert len(store.boxes(i)) == 1


def test_imagenet_pack_strict_leaves_nothing_behind(tmp_path, capsys):
    from fixtures.imagenet_ab import write_imagenet_ab_fixture

    fx = write_imagenet_ab_fixture(tmp_path / "fx")
    bad = fx["train_xml_root"] / "train_xml" / "n01440764" / "n01440764_99.xml"
    bad.write_bytes(b"<annotation><filename>n01440764_99</filename><metadata><selected>Tru")
    dst = tmp_path / "out.store"
    assert main(["pack", str(fx["train_xml_root"]), str(dst), "--quiet", "--strict"]) == 1
    assert "n01440764_99" in capsys.readouterr().err
    assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert main(["pack", str(fx["train_xml_root"]), str(dst), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "packed 3 files" in out and "1 problem(s) skipped" in out and "n01440764_99" in out


def test_show_over_a_real_image(tmp_path, capsys):
    from PIL import Image

    path = write_imagenet_store(byproduct_samples(), tmp_path / "s")
    img = tmp_path / "n01440764_18.JPEG"
    Image.fromarray((np.random.default_rng(0).random((375, 500, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "over.png"
    assert main(["show", str(path), "n01440764_18", "--image", str(img), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 50_000
