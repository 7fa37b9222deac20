"""build_loader (luab_fast/data/): the reported crop window agrees with the pixels, sharding and order,
resume, targets from the stores, bad input. DALI runs its CPU-only mode here (device_id=None)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from luab_fast.data.crops import random_resized_windows
from luab_fast.data.decode import MEAN, STD
from luab_fast.data.loader import build_loader, dali_available

BACKENDS = ["torchvision", pytest.param("dali", marks=pytest.mark.skipif(not dali_available(), reason="no DALI"))]
STEMS = {"n01440764": ["n01440764_10026", "n01440764_18"], "n01443537": ["n01443537_2", "n01443537_7", "n01443537_9"]}


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """Gradients and a disc: structure a wrong window would show, smooth enough that resampling filters agree."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.3) * min(h, w)
    disc = ((y - cy) ** 2 + (x - cx) ** 2 < r * r).astype(np.float32)
    img = np.stack([255 * x / w, 255 * y / h, 80 + 150 * disc], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    k = 0
    for wnid, stems in STEMS.items():
        (root / wnid).mkdir()
        for s in stems:
            Image.fromarray(smooth_image(90 + 13 * k, 120 + 7 * k, k)).save(root / wnid / f"{s}.JPEG", quality=95)
            k += 1
    return root


def expected_image(path, box, flip, size) -> torch.Tensor:
    """Decode the whole file, cut the reported box, resize, flip, normalise: what the batch must hold."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        W, H = im.size
        x0, y0, x1, y1 = (float(v) for v in box)
        im = im.crop((round(x0 * W), round(y0 * H), round(x1 * W), round(y1 * H))).resize((size, size), Image.BILINEAR)
        if flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)
    return (x - torch.tensor(MEAN)[:, None, None] * 255) / (torch.tensor(STD)[:, None, None] * 255)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("train", [True, False])
def test_crop_window_agrees_with_the_pixels(folder, backend, train):
    loader = build_loader(folder, 5, train=train, device="cpu", image_size=48, backend=backend, seed=3)
    files = loader.images.files
    for batch in loader:
        for img, row, box, flip, size in zip(batch["images"], batch["rows"], batch["boxes"], batch["flips"],
                                             batch["sizes"]):
            with Image.open(files[int(row)]) as im:
                assert (im.size[1], im.size[0]) == tuple(size.tolist())
            want = expected_image(files[int(row)], box, bool(flip), 48)
            err = float((img - want).abs().mean())
            assert err < 0.06, f"mean |Δ| {err:.3f} (JPEG decoder / resampling filter tolerance)"
            # the check can fail: the mirrored crop (or another window) is far off
            wrong = expected_image(files[int(row)], box, not bool(flip), 48)
            assert float((img - wrong).abs().mean()) > 3 * max(err, 0.02)
        assert not train or bool(batch["flips"].any() | ~batch["flips"].all())


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_are_disjoint_and_cover_the_epoch(folder, drop_last):
    loaders = [build_loader(folder, 2, device="cpu", image_size=16, backend="torchvision", rank=r, world_size=2,
                            seed=7, drop_last=drop_last) for r in range(2)]
    rows = [[int(x) for b in ld for x in b["rows"]] for ld in loaders]
    assert len(rows[0]) == len(rows[1])  # every rank runs as many steps (DDP needs it)
    if drop_last:
        assert len(rows[0]) == 2 * len(loaders[0])
        assert not set(rows[0]) & set(rows[1]) and len(set(rows[0] + rows[1])) == 4  # 5 images, 2 ranks × 2
    else:
        assert set(rows[0]) | set(rows[1]) == set(range(5))  # padded by wrapping: all covered
    again = [int(x) for b in build_loader(folder, 2, device="cpu", image_size=16, backend="torchvision", rank=0,
                                          world_size=2, seed=7, drop_last=drop_last) for x in b["rows"]]
    assert again == rows[0]
    loaders[0].set_epoch(1)  # another epoch: another permutation of the same seed
    assert [int(x) for b in loaders[0] for x in b["rows"]] == loaders[0].epoch_rows(1).tolist()
    assert len({tuple(loaders[0].epoch_rows(e)) for e in range(6)}) > 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_batches_and_resume(folder, backend):
    a = build_loader(folder, 2, device="cpu", image_size=24, backend=backend, seed=11)
    b = build_loader(folder, 2, device="cpu", image_size=24, backend=backend, seed=11)
    first = list(a)
    for x, y in zip(first, b):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    resumed = list(a.iter_from(1))
    assert len(resumed) == len(first) - 1
    for x, y in zip(first[1:], resumed):
        assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["images"], y["images"])
    other = build_loader(folder, 2, device="cpu", image_size=24, backend=backend, seed=12)
    assert not all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(first, other))
    assert a.throughput() is not None and a.throughput() > 0


def test_dali_and_torchvision_take_the_same_crops(folder):
    if not dali_available():
        pytest.skip("no DALI")
    d = build_loader(folder, 5, device="cpu", image_size=32, backend="dali", seed=5)
    t = build_loader(folder, 5, device="cpu", image_size=32, backend="torchvision", seed=5)
    for x, y in zip(d, t):
        for k in ("rows", "boxes", "flips", "sizes", "labels"):
            assert torch.equal(x[k], y[k])
        assert float((x["images"] - y["images"]).abs().mean()) < 0.06


def test_random_resized_windows_fit_and_follow_the_law():
    rng = np.random.default_rng(0)
    sizes = np.tile([[375, 500]], (4000, 1))
    win = random_resized_windows(sizes, rng)
    y0, x0, h, w = win.T
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y0 + h <= 375).all() and (x0 + w <= 500).all()
    frac = h * w / (375 * 500)
    # torchvision's own sampler (rejection makes big, elongated crops rarer than the raw law)
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    img = torch.zeros(3, 375, 500)
    tv = np.array([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)])
    tv_frac = tv[:, 2] * tv[:, 3] / (375 * 500)
    assert 0.07 < frac.min() and frac.max() <= 1.0 and abs(frac.mean() - tv_frac.mean()) < 0.015
    assert abs(np.median(w / h) - np.median(tv[:, 3] / tv[:, 2])) < 0.03
    ratio = w / h
    assert (ratio > 0.7).all() and (ratio < 1.4).all()
    tall = random_resized_windows(np.array([[1000, 10]]), rng, attempts=1)  # nothing fits: ratio-clamped centre
    assert tall.tolist() == [[(1000 - 13) // 2, 0, 13, 10]]  # h = round(10 / (3/4))


def test_targets_from_the_stores(folder, tmp_path):
    from fixtures.stores import byproduct_samples as _samples

    from luab_fast.byproducts import write_imagenet_store

    store = write_imagenet_store(_samples(), tmp_path / "ab.store")  # 4 of the folder's 5 stems
    labels = tmp_path / "agg.csv"
    stems = [s for ss in STEMS.values() for s in ss]
    labels.write_text("task,label\n" + "".join(f"{s},{i % 2}\n" for i, s in enumerate(stems)))
    loader = build_loader(folder, 5, train=False, device="cpu", image_size=16, backend="torchvision",
                          byproducts=store, labels=labels, heat_size=(7, 7))
    (batch,) = list(loader)
    stem_of = [loader.images.stems[int(r)] for r in batch["rows"]]
    assert batch["target"].tolist() == [stems.index(s) % 2 for s in stem_of]  # labels= is the class target
    assert torch.equal(batch["labels"], torch.from_numpy(loader.images.labels)[batch["rows"]])  # the folders'
    assert batch["heat"].shape == (5, 7, 7) and batch["point"].shape == (5, 2)
    has_trace = {"n01440764_10026", "n01440764_18"}
    for s, heat, wt in zip(stem_of, batch["heat"], batch["point_weight"]):
        assert (abs(float(heat.sum()) - 1) < 1e-4) == (s in has_trace)
        if s in ("n01443537_9", "n01443537_7", "n01443537_2"):  # absent from the store, or no click
            assert float(wt) == 0.0
    # the heat maps are rasterised at the size the loader is built with (the model's map, known before the
    # loader): a byproduct store without one is refused
    with pytest.raises(ValueError, match=r"heat_size is required with byproducts: the \(h, w\) of the model's"):
        build_loader(folder, 5, device="cpu", image_size=16, backend="torchvision", byproducts=store)
    wide = build_loader(folder, 5, device="cpu", image_size=16, backend="torchvision", byproducts=store,
                        heat_size=(3, 5))
    assert wide.has_byproducts and next(iter(wide))["heat"].shape == (5, 3, 5)


def test_without_stores_the_class_target_is_the_folder_label(folder):
    """No byproduct store: no heat size is needed, and the batches carry no byproduct keys."""
    loader = build_loader(folder, 5, device="cpu", image_size=16, backend="torchvision")
    batch = next(iter(loader))
    assert not loader.has_byproducts and not {"point", "point_weight", "heat"} & batch.keys()
    assert torch.equal(batch["target"], batch["labels"])


def test_crop_scale_bounds_the_training_windows(folder):
    """``crop_scale`` is the (min, max) area fraction of the training crops (up to integer rounding)."""
    loader = build_loader(folder, 5, device="cpu", image_size=16, backend="torchvision", crop_scale=(0.6, 1.0))
    for batch in loader:
        b = batch["boxes"].double()
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        assert (area > 0.55).all() and (area <= 1.0 + 1e-6).all()


def test_bad_input(folder, tmp_path):
    with pytest.raises(ValueError, match="source"):
        build_loader(tmp_path / "nope", 2, device="cpu")
    with pytest.raises(ValueError, match="rank"):
        build_loader(folder, 2, device="cpu", rank=2, world_size=2)
    with pytest.raises(ValueError, match="backend"):
        build_loader(folder, 2, device="cpu", backend="ffcv")
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(folder, 0, device="cpu")
    with pytest.raises(ValueError, match="crop_scale"):
        build_loader(folder, 2, device="cpu", crop_scale=(0.5, 0.2))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        build_loader(tmp_path / "empty", 2, device="cpu")
    lst = tmp_path / "list.txt"
    lst.write_text(f"{next(folder.glob('*/*.JPEG'))} x\n")
    with pytest.raises(ValueError, match="line 1"):
        build_loader(lst, 2, device="cpu")


def test_demo_train_split_with_its_byproducts(tmp_path):
    """The built-in demo end to end: its packed ImageNet-AB store gives most crops a click and a trace map."""
    from luab_fast.data import make_demo

    paths = make_demo(tmp_path / "demo", seed=0, size="tiny")
    loader = build_loader(paths.train, 32, device="cpu", image_size=64, backend="torchvision", byproducts=paths.store,
                          heat_size=(8, 8))
    batch = next(iter(loader))
    assert batch["images"].shape == (32, 3, 64, 64) and batch["labels"].max() < 10
    non_empty = batch["heat"].flatten(1).sum(1) > 0.99
    assert float(non_empty.float().mean()) > 0.5  # crops keep 8-100% of the image: most keep the trace
    assert float(batch["point_weight"].mean()) > 0.3  # the click falls in most crops


@pytest.mark.cuda
def test_dali_mixed_mode_matches_cpu_mode(folder):
    """On a GPU: nvJPEG decodes the same windows as DALI's CPU-only mode, within decoder tolerance."""
    if not dali_available():
        pytest.skip("no DALI")
    gpu = build_loader(folder, 5, device="cuda", image_size=32, backend="dali", seed=9)
    cpu = build_loader(folder, 5, device="cpu", image_size=32, backend="dali", seed=9)
    for x, y in zip(gpu, cpu):
        assert x["images"].is_cuda and torch.equal(x["boxes"].cpu(), y["boxes"])
        assert float((x["images"].cpu() - y["images"]).abs().mean()) < 0.03


@pytest.mark.cuda
def test_torchvision_backend_on_the_gpu_equals_the_cpu(folder):
    """On a GPU the torchvision backend stages each batch in pinned memory and copies it asynchronously: the
    same pixels as on the CPU, bit for bit, over several batches (no buffer reused before its copy ended)."""
    gpu = build_loader(folder, 2, device="cuda", image_size=32, backend="torchvision", seed=3)
    cpu = build_loader(folder, 2, device="cpu", image_size=32, backend="torchvision", seed=3)
    batches = list(gpu)  # all launched before any is read back
    for x, y in zip(batches, cpu):
        assert x["images"].is_cuda and torch.equal(x["images"].cpu(), y["images"])


@pytest.mark.cuda
def test_gpu_batches_never_wait_for_the_gpu(tmp_path):
    """Building a batch on a GPU (decode, copies, click and trace targets) queues work without syncing, so the
    loader prepares batch k+1 while the GPU trains on batch k: CUDA's sync debug mode raises on any sync."""
    from luab_fast.data import make_demo

    paths = make_demo(tmp_path / "demo", seed=0, size="tiny")
    loader = build_loader(paths.train, 32, device="cuda", image_size=64, backend="torchvision", byproducts=paths.store,
                          labels=None, heat_size=(4, 4), channels_last=True)
    batches = iter(loader)
    next(batches)  # warm-up: Triton compiles its kernels, the allocators fill
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            batch = next(batches)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert batch["heat"].is_cuda and batch["point"].is_cuda and batch["images"].is_cuda
