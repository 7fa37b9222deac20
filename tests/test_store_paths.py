"""A path that is not a store: opening it says what it is (a directory without a store manifest, a file, a
release not packed yet) and suggests packing into a NEW path; packing never replaces anything but a store of
the same format (an image folder or a release given as the destination stays as it was)."""

from __future__ import annotations

import json

import pytest
from fixtures.stores import byproduct_samples, write_label_map_release

from luab_fast import _cli
from luab_fast.byproducts import ByproductStore, StoreError, write_imagenet_store
from luab_fast.byproducts import cli as byproducts_cli
from luab_fast.relabel import LabelMapStore, pack_label_maps


def byproducts_main(argv):  # as `python -m luab_fast.byproducts` runs it: errors become one line and a status
    return _cli.run(byproducts_cli.main, argv)


def _tree(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


@pytest.fixture
def paths(tmp_path):
    """What users pass by mistake: an image folder, a random file, a byproducts release archive."""
    folder = tmp_path / "images"
    (folder / "n01440764").mkdir(parents=True)
    (folder / "n01440764" / "n01440764_18.JPEG").write_bytes(b"\xff\xd8 not really")
    rnd = tmp_path / "random.bin"
    rnd.write_bytes(bytes(range(256)))
    tar = tmp_path / "release.tar.gz"
    tar.write_bytes(b"\x1f\x8b pretend gzip")
    return {"folder": folder, "file": rnd, "archive": tar}


@pytest.mark.parametrize("opener,name,cmd", [(ByproductStore.open, "store", "luab_fast.byproducts"),
                                             (LabelMapStore.open, "label-map store", "luab_fast.relabel")])
def test_opening_a_non_store_says_what_it_is_and_suggests_a_new_path(paths, opener, name, cmd):
    what = {"folder": "a directory without a store manifest", "file": "it is a file",
            "archive": "a release archive, not packed yet" if name == "store" else "it is a file"}
    for kind, path in paths.items():
        with pytest.raises(StoreError) as e:
            opener(path)
        msg = str(e.value)
        assert f"{path} is not a luab_fast {name}" in msg and what[kind] in msg
        assert f"python -m {cmd} pack" in msg and "NEW.store" in msg
        assert f"SRC {path}`" not in msg  # packing into the path given would replace it


def test_a_label_map_directory_is_recognised_as_unpacked(tmp_path):
    write_label_map_release(tmp_path / "maps", n_per_wnid=1)
    with pytest.raises(StoreError, match=rf"it is a release directory, not packed yet; pack it into a new path with "
                                         rf"`python -m luab_fast.relabel pack {tmp_path / 'maps'} NEW.store`"):
        LabelMapStore.open(tmp_path / "maps")


def test_packing_never_replaces_a_non_store(paths, tmp_path):
    src = tmp_path / "maps"
    write_label_map_release(src, n_per_wnid=1)
    other = write_imagenet_store(byproduct_samples(), tmp_path / "ab.store")
    before = _tree(tmp_path)
    for path in paths.values():
        with pytest.raises(ValueError, match=rf"{path} exists and is not a luab_fast.byproducts store .*choose a new "
                                             rf"path or delete it yourself"):
            write_imagenet_store(byproduct_samples(), path)
        with pytest.raises(ValueError, match=rf"{path} exists and is not a luab_fast.relabel label-map store"):
            pack_label_maps(src, path, progress=False)
    with pytest.raises(ValueError, match="it is a luab_fast.byproducts store"):  # nor a store of another format
        pack_label_maps(src, other, progress=False)
    assert _tree(tmp_path) == before


def test_pack_cli_into_an_image_folder_fails_and_keeps_it(paths, tmp_path, capsys):
    from fixtures.imagenet_ab import write_imagenet_ab_fixture

    fx = write_imagenet_ab_fixture(tmp_path / "fx")
    before = _tree(paths["folder"])
    assert byproducts_main(["pack", str(fx["tar"]), str(paths["folder"]), "--quiet"]) != 0
    assert "exists and is not a luab_fast.byproducts store" in capsys.readouterr().err
    assert _tree(paths["folder"]) == before


def test_replacing_a_store_of_the_same_format_or_an_empty_directory_is_allowed(tmp_path):
    dst = tmp_path / "ab.store"
    write_imagenet_store(byproduct_samples(), dst)
    write_imagenet_store(byproduct_samples()[:2], dst)  # re-pack in place
    assert len(ByproductStore.open(dst)) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["ab.store"]
    (tmp_path / "empty").mkdir()
    assert len(ByproductStore.open(write_imagenet_store(byproduct_samples(), tmp_path / "empty"))) == 4
    # a store whose checksum fails is still a store of this format: re-packing it is the fix the error suggests
    mf = dst / "manifest.json"
    doc = json.loads(mf.read_text())
    doc["version"] = 0
    mf.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="checksum"):
        ByproductStore.open(dst)
    write_imagenet_store(byproduct_samples(), dst)
    assert len(ByproductStore.open(dst)) == 4
    src = tmp_path / "maps"
    write_label_map_release(src, n_per_wnid=1)
    pack_label_maps(src, tmp_path / "lm", progress=False)
    pack_label_maps(src, tmp_path / "lm", progress=False, score_dtype="float16")
    assert LabelMapStore.open(tmp_path / "lm").meta["score_dtype"] == "float16"
