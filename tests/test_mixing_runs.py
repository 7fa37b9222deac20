"""CutMix / Mixup in the loader and the trainer (tiny demo, CPU): a training batch is the plain batch mixed by the
parameters its key draws (pixels, class target, heat map, click); the options are checked and stated in --help;
short training runs with each target kind (hard labels and byproducts, --labels posteriors, --label-maps with
region pooling, label maps and byproducts under --aa); the mixing settings belong to a run's resume identity; a
stopped and resumed run with CutMix ends with the weights of an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from luab_fast.data import mix_targets as mt
from luab_fast.data.loader import build_loader
from luab_fast.data.mixing import Mixing
from luab_fast.train.config import load_config, parser
from luab_fast.train.run import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


@pytest.fixture(scope="module")
def label_maps(demo, tmp_path_factory):
    """A ReLabel-format store for every demo training image: top-2 maps on a 4x4 grid whose top class changes
    from the left half (the image's class) to the right half (the next class), so region pooling matters."""
    from luab_fast.data.source import list_images
    from luab_fast.relabel import pack_label_maps

    images = list_images(demo.train)
    src = tmp_path_factory.mktemp("maps")
    for path, label in zip(images.files, images.labels.tolist()):
        scores = torch.tensor([5.0, 1.0]).view(2, 1, 1).expand(2, 4, 4)
        first = torch.tensor([label, (label + 1) % 10], dtype=torch.float32).view(2, 1, 1).repeat(1, 4, 4)
        first[:, :, 2:] = first.flip(0)[:, :, 2:]
        (src / images.classes[label]).mkdir(exist_ok=True)
        torch.save(torch.stack([scores, first]).contiguous(), src / images.classes[label] / f"{Path(path).stem}.pt")
    return pack_label_maps(src, src.parent / "maps.store", num_classes=10, progress=False).path


def _loader(demo, mixing=None, **kw):
    return build_loader(demo.train, 8, device="cpu", image_size=32, seed=3, backend="torchvision", threads=1,
                        byproducts=demo.store, heat_size=(4, 4), mixing=mixing, **kw)


def test_a_training_batch_is_the_plain_batch_mixed_by_its_keys_draw(demo):
    mixing = Mixing(cutmix=1.0, mixup=1.0, mode="elem")
    plain, mixed = _loader(demo), _loader(demo, mixing)
    for loader in (plain, mixed):
        loader.set_epoch(1)
    rows = plain.epoch_rows()[16:24]
    a, b = plain.batch(rows, 2), mixed.batch(rows, 2)
    p = mixing.draw(8, 32, [3, 1, 0, 2])
    lam, cut, box = (torch.from_numpy(v) for v in (p.lam, p.cut, p.box))
    assert cut.any() and (lam < 1).all()
    assert torch.equal(b["images"], mt.mix_images(a["images"], lam, cut, box))
    assert torch.equal(b["target"], mt.mix_class_target(a["target"], lam, 10))
    assert torch.equal(b["heat"], mt.mix_heat(a["heat"], lam, cut, box, 32))
    point, weight = mt.mix_points(a["point"], a["point_weight"], lam, cut, box, 32)
    assert torch.equal(b["point"], point) and torch.equal(b["point_weight"], weight)
    assert torch.equal(b["boxes"], a["boxes"]) and torch.equal(b["rows"], a["rows"])  # the crops are the same
    with pytest.raises(ValueError, match="mixing= pairs sample i with B - 1 - i of full training batches: it needs "
                                         "train=True, drop_last and an even batch_size, got train=False"):
        _loader(demo, mixing, train=False)


def test_mixing_options_are_checked_and_the_rules_stated():
    base = ["--cutmix", "1.0"]
    for extra, message in (
            (["--batch-size", "7"], "--batch-size: --mixup / --cutmix pair sample i with B - 1 - i, expected an even "
                                    "batch size, got 7"),
            (["--mixup-off-epoch", "3", "--epochs", "3"], "--mixup-off-epoch: expected 0 <= N < --epochs 3"),
            (["--cutmix-minmax", "0.5", "0.2"], "--cutmix-minmax: expected min < max in [0, 1]"),
            (["--mixup-prob", "1.5"], "--mixup-prob must be in [0, 1], got 1.5"),
            (["--mixup", "-1"], "--mixup must be in [0, inf), got -1"),
            (["--cutmix-relabel", "region"], "--cutmix-relabel region pools --label-maps over the regions CutMix "
                                             "pastes: give --label-maps and --cutmix")):
        with pytest.raises(ValueError) as info:
            load_config([*base, *extra])
        assert message in str(info.value), extra
    cfg = load_config(["--cutmix", "1.0", "--mixup-mode", "pair", "--cutmix-minmax", "0.2", "0.8"])
    assert (cfg.cutmix, cfg.mixup_mode, cfg.cutmix_minmax, cfg.mixup_off_epoch) == (1.0, "pair", [0.2, 0.8], 0)
    text = " ".join(parser().format_help().split())
    assert "a click under the other image's box is dropped (weight 0)" in text
    assert "Mixup keeps a's click, weight λ" in text


def _train(demo, out, *extra):
    return main(["--data", str(demo.train), "--out", str(out), "--device", "cpu", "--backend", "torchvision",
                 "--batch-size", "8", "--image-size", "32", "--max-steps", "2", "--workers", "1", *extra])


def _posteriors(demo, path):
    truth = pd.read_csv(demo.truth, dtype={"task": str})
    probs = torch.full((len(truth), 10), 0.02)
    probs[torch.arange(len(truth)), torch.as_tensor(truth["label"].to_numpy().copy())] = 0.82
    soft = pd.DataFrame(probs.numpy(), columns=[f"p{k}" for k in range(10)])
    soft.insert(0, "task", truth["task"])
    soft.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["labels_and_byproducts", "posteriors", "label_maps_region", "maps_byproducts_aa"])
def test_cutmix_trains_with_every_target_kind(demo, label_maps, tmp_path, kind):
    extra = {"labels_and_byproducts": ["--byproducts", str(demo.store), "--no-compare", "--mixup", "0.8",
                                       "--mixup-mode", "elem"],
             "posteriors": ["--labels", str(_posteriors(demo, tmp_path / "p.csv"))],
             "label_maps_region": ["--label-maps", str(label_maps), "--cutmix-relabel", "region",
                                   "--mixup-mode", "pair"],
             # label maps pooled over what the moved image shows, beside the byproducts moved with it
             "maps_byproducts_aa": ["--label-maps", str(label_maps), "--cutmix-relabel", "region", "--byproducts",
                                    str(demo.store), "--no-compare"],
             }[kind]
    # every kind under the whole recipe: CutMix, RandAugment (the geometric ops move the targets) and
    # random erasing
    extra += ["--aa", "rand-m9-mstd0.5", "--reprob", "0.25"]
    out = tmp_path / "run"
    assert _train(demo, out, "--cutmix", "1.0", *extra) == 0
    models = sorted(p.name for p in out.iterdir() if (p / "last.pt").exists())
    assert models == {"labels_and_byproducts": ["luab"], "posteriors": ["baseline"],
                      "label_maps_region": ["baseline"], "maps_byproducts_aa": ["luab"]}[kind]
    for model in models:
        saved = torch.load(out / model / "last.pt", weights_only=True)
        assert saved["state"]["step"] == 2 and saved["run"]["cutmix"] == 1.0
        assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    if kind == "posteriors":  # the mixing settings are the run's: a resume with others is refused
        assert _train(demo, out, "--cutmix", "0.5", "--resume", *extra) == 2


def test_resumed_with_cutmix_equals_uninterrupted(demo, tmp_path):
    """A run stopped after 2 steps and resumed to 3 ends with the weights of a 3-step run: the mixing of each batch
    is drawn from its key, not from a state the stop could lose (a constant schedule: the lr does not depend on
    the run's length)."""
    common = ["--sched", "constant", "--warmup-steps", "0", "--deterministic", "--checkpoint-every", "2",
              "--cutmix", "1.0", "--mixup", "0.5", "--mixup-mode", "elem"]
    assert _train(demo, tmp_path / "a", *common, "--max-steps", "3") == 0
    assert _train(demo, tmp_path / "b", *common) == 0  # 2 steps
    assert _train(demo, tmp_path / "b", *common, "--max-steps", "3", "--resume") == 0
    a, b = (torch.load(tmp_path / d / "baseline" / "last.pt", weights_only=True) for d in "ab")
    assert a["state"]["step"] == b["state"]["step"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
