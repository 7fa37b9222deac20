"""Hostile input to ``python -m luab_fast.relabel`` and the label-map store's Python API (issue 17).

A pack that finds nothing valid fails (exit 1); one with problems never replaces an existing store unless
``--replace-with-problems``; duplicates name both files; a store whose arrays or meta contradict each other is
"damaged" at open / ``info --verify``; ``show`` checks its ``--out`` first; every file gets the umask's mode.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from luab_fast._store.format import MANIFEST, _manifest_digest
from luab_fast.relabel import LabelMapStore, StoreError, pack_label_maps

from .conftest import leftovers, snapshot

K, S, C = 2, 3, 10


def _map(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(C, generator=g)[:K] for _ in range(S * S)], 1).view(K, S, S)
    scores = torch.rand(K, S, S, generator=g).cumsum(0).flip(0)
    return torch.stack([scores, idx.float()])


def _release(root: Path, stems=("n01_1", "n01_2", "n02_1")) -> Path:
    for j, stem in enumerate(stems):
        p = root / stem.split("_")[0] / f"{stem}.pt"
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_map(j), p)
    return root


@pytest.fixture
def work(tmp_path: Path, cli) -> Path:
    _release(tmp_path / "src")
    cli("relabel", "pack", tmp_path / "src", tmp_path / "L.store", "--num-classes", C, "--quiet").ok()
    return tmp_path


def _rewrite_consistently(store: Path, name: str | None, arr: np.ndarray | None, **meta) -> None:
    doc = json.loads((store / MANIFEST).read_text())
    if name is not None:
        import hashlib

        np.save(store / f"{name}.npy", arr, allow_pickle=False)
        digest = hashlib.blake2b((store / f"{name}.npy").read_bytes(), digest_size=16).hexdigest()
        doc["arrays"][name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "blake2b": digest}
    doc["meta"].update(meta)
    doc["manifest_blake2b"] = _manifest_digest({k: doc[k] for k in ("format", "version", "arrays", "meta")})
    (store / MANIFEST).write_text(json.dumps(doc))


BAD_SOURCES = {
    "empty folder": lambda d: d.mkdir() or d,
    "only garbage .pt": lambda d: _write(d / "n01" / "n01_1.pt", b"not a pickle").parent.parent,
    "loose .pt only": lambda d: (_release(d / "x"), (d / "x" / "n01" / "n01_1.pt").rename(d / "n01_1.pt"),
                                 d)[-1],
    "wrong shapes": lambda d: (d.joinpath("n01").mkdir(parents=True), torch.save(torch.zeros(3, 4), d / "n01" / "a.pt"),
                               d)[-1],
}


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
@pytest.mark.parametrize("kind", list(BAD_SOURCES))
def test_pack_of_nothing_valid_fails_and_keeps_the_store(work, cli, kind, strict):
    src = BAD_SOURCES[kind](work / "bad")
    before = snapshot(work / "L.store")
    r = cli("relabel", "pack", src, work / "L.store", "--num-classes", C, "--quiet", *(["--strict"] if strict else []))
    r.failed_with(1, str(src))
    if not strict:
        r.failed_with(1, "no valid label maps", "nothing was written")
    assert snapshot(work / "L.store") == before and not leftovers(work)


def test_pack_with_problems_keeps_an_existing_store_unless_told(work, cli):
    src = _release(work / "partial", ("n01_1", "n01_5"))
    _write(src / "n01" / "n01_9.pt", b"not a pickle")
    before = snapshot(work / "L.store")
    cli("relabel", "pack", src, work / "L.store", "--num-classes", C, "--quiet").failed_with(
        1, "n01_9.pt", "left as it is", "--replace-with-problems")
    assert snapshot(work / "L.store") == before and not leftovers(work)
    out = cli("relabel", "pack", src, work / "L.store", "--num-classes", C, "--quiet",
              "--replace-with-problems").ok().out
    assert "packed 2 label maps" in out and "n01_9.pt" in out
    assert sorted(LabelMapStore.open(work / "L.store").ids) == ["n01_1", "n01_5"] and not leftovers(work)


def test_pack_onto_itself_or_from_a_store_is_refused(work, cli):
    before = snapshot(work)
    cli("relabel", "pack", work / "L.store", work / "L.store", "--quiet").failed_with(2, "is a packed store")
    cli("relabel", "pack", work / "src", work / "src", "--quiet").failed_with(2, "is the source directory")
    cli("relabel", "pack", work / "src", work / "X.store", "--num-classes", 0, "--quiet").failed_with(2, "num_classes")
    cli("relabel", "pack", work / "nope", work / "X.store", "--quiet").failed_with(2, "SRC", "nope")
    assert snapshot(work) == before


def test_duplicate_and_unnamed_files_are_problems_naming_them(work, cli):
    src = _release(work / "dup", ("n01_1", "n02_3"))
    torch.save(_map(7), src / "n02" / "n01_1.pt")  # the same image id in another wnid folder
    torch.save(_map(8), src / "n01" / "n01_1.v2.pt")  # the same stem under the one stem rule (first '.')
    torch.save(_map(9), src / "n01" / "n01_ü.pt")
    out = cli("relabel", "pack", src, work / "D.store", "--num-classes", C, "--quiet").ok().out
    assert "3 problem(s)" in out and "also in" in out and str(src / "n01" / "n01_1.pt") in out
    assert "n01_ü.pt" in out and "ascii" in out.lower()
    store = LabelMapStore.open(work / "D.store")
    assert sorted(store.ids) == ["n01_1", "n02_3"]
    assert torch.equal(store.gather([store.row("n01_1")])[0][0], _map(0)[0])  # the first file won
    cli("relabel", "pack", src, work / "S2.store", "--num-classes", C, "--strict", "--quiet").failed_with(
        1, "duplicate image id")


@pytest.mark.parametrize("edit", ["shrink scores", "shrink label", "indices shape", "meta topk", "meta num_classes",
                                  "label out of range", "index out of range", "class index out of range"])
def test_a_damaged_store_is_named(work, cli, edit):
    store = work / "L.store"
    name, arr, meta = None, None, {}
    if edit == "shrink scores":
        name, arr = "scores", np.load(store / "scores.npy")[:-1]
    elif edit == "shrink label":
        name, arr = "label", np.load(store / "label.npy")[:-1]
    elif edit == "indices shape":
        name, arr = "indices", np.load(store / "indices.npy")[:, :1]
    elif edit == "meta topk":
        meta = {"topk": K + 1}
    elif edit == "meta num_classes":
        meta = {"num_classes": "ten"}
    elif edit == "label out of range":
        name, arr = "label", np.load(store / "label.npy") + 50
    elif edit == "index out of range":
        arr = np.load(store / "index.npy")
        arr[arr >= 0] = 99
        name = "index"
    else:
        name, arr = "indices", np.load(store / "indices.npy") + C
    _rewrite_consistently(store, name, arr, **meta)
    cli("relabel", "info", store, "--verify").failed_with(1, str(store), "is damaged")
    try:  # open may pass (it reads a few values); then nothing it hands out may raise anything but StoreError
        st = LabelMapStore.open(store)
        st.rows(["n01_1", "n02_1"]), st.wnids, st.gather([0, 1])
        st.to("cpu")  # what the kernels then gather unchecked is checked here
        assert edit != "class index out of range"
    except StoreError as exc:
        assert "is damaged" in str(exc)


@pytest.mark.parametrize("case", ["missing folder", "out is a folder", "unknown id", "no image"])
def test_show_bad_arguments(work, cli, case):
    image_id, out, extra = "n01_1", work / "f.png", []
    if case == "missing folder":
        out = work / "nodir" / "f.png"
    elif case == "out is a folder":
        out = work / "src"
    elif case == "unknown id":
        image_id = "n09_9"
    else:
        extra = ["--image", work / "missing.jpg"]
    before = snapshot(work)
    frag = {"missing folder": "does not exist", "out is a folder": "is a folder", "unknown id": "IMAGE_ID",
            "no image": "--image"}[case]
    cli("relabel", "show", work / "L.store", image_id, "--out", out, *extra).failed_with(2, frag)
    assert snapshot(work) == before


def test_store_figure_and_generated_maps_get_the_umask_mode(tmp_path, cli):
    from luab_fast.relabel.generate import _save_atomic

    _release(tmp_path / "src")
    old = os.umask(0o022)
    try:
        cli("relabel", "pack", tmp_path / "src", tmp_path / "L.store", "--num-classes", C, "--quiet").ok()
        cli("relabel", "show", tmp_path / "L.store", "n01_1", "--out", tmp_path / "f.png").ok()
        _save_atomic(_map(0), tmp_path / "gen" / "n01" / "n01_1.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "L.store").stat().st_mode) == 0o755
    files = [*(tmp_path / "L.store").iterdir(), tmp_path / "f.png", tmp_path / "gen" / "n01" / "n01_1.pt"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644} and not leftovers(tmp_path)


def test_api_refuses_wrong_types(work):
    st = LabelMapStore.open(work / "L.store")
    with pytest.raises(TypeError, match="list of ids"):
        st.rows("n01_1")
    with pytest.raises(ValueError, match="rows must be integer"):
        st.gather([0.5])
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        st.gather([3])
    with pytest.raises(ValueError, match="no valid label maps"):
        pack_label_maps(work / "src" / "n01", work / "L.store", num_classes=C, progress=False)  # no <wnid>/ level


@pytest.mark.parametrize("args,frag", [(["--topk", "0"], "topk"), (["--batch-size", "0"], "batch_size"),
                                       (["--size", "-3"], "size")])
def test_generate_bad_numbers(tmp_path, cli, args, frag):
    (tmp_path / "imgs").mkdir()
    cli("relabel", "generate", "--model", "test_resnet", "--images", tmp_path / "imgs", "--out", tmp_path / "o",
        "--device", "cpu", "--quiet", *args).failed_with(2, frag)
    assert not (tmp_path / "o").exists()
