"""python -m luab_fast.train on user data (CPU, in process): the label forms --labels takes, YAML configs,
stores that lack images (--strict), and the NaN guard (stops, names the term, keeps the last good checkpoint)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from luab_fast.train import loop
from luab_fast.train.run import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def _train(demo, out, *extra):
    """One short labels+byproducts run on the demo's train split given as user data."""
    return main(["--data", str(demo.train), "--byproducts", str(demo.store), "--out", str(out), "--device", "cpu",
                 "--backend", "torchvision", "--batch-size", "16", "--no-compare", *extra])


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def test_raw_crowd_csv_is_aggregated_then_trained_on(demo, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(demo, out, "--labels", str(demo.labels), "--max-steps", "1") == 0
    said = capsys.readouterr().out
    assert "with Dawid-Skene" in said
    agg = pd.read_csv(out / "aggregated_labels.csv", dtype={"task": str})
    truth = pd.read_csv(demo.truth, dtype={"task": str}).set_index("task")["label"]
    assert len(agg) == len(truth) and (agg.set_index("task")["label"] == truth.loc[agg["task"]]).mean() > 0.8
    assert _metrics(out)["models"]["luab"]["steps"] == 1


def test_posteriors_are_soft_targets(demo, tmp_path, capsys):
    truth = pd.read_csv(demo.truth, dtype={"task": str})
    probs = torch.full((len(truth), 10), 0.02)
    probs[torch.arange(len(truth)), torch.as_tensor(truth["label"].to_numpy().copy())] = 0.82
    soft = pd.DataFrame(probs.numpy(), columns=[f"p{k}" for k in range(10)])
    soft.insert(0, "task", truth["task"])
    path = tmp_path / "posteriors.csv"
    soft.to_csv(path, index=False)
    out = tmp_path / "run"
    assert _train(demo, out, "--labels", str(path), "--max-steps", "2") == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # soft targets: the class term is a cross-entropy against 0.82/0.02 targets, never below their entropy
    entropy = -(0.82 * torch.log(torch.tensor(0.82)) + 9 * 0.02 * torch.log(torch.tensor(0.02)))
    assert [r["step"] for r in log if "cls" in r] == [1, 2]
    assert all(r["cls"] >= float(entropy) - 1e-4 for r in log if "cls" in r)

    soft.iloc[:, :6].to_csv(path, index=False)  # 5 class columns for 10 classes
    assert _train(demo, tmp_path / "bad", "--labels", str(path), "--max-steps", "1") == 1  # bad data
    assert "posteriors have 5 columns, the data 10 classes" in capsys.readouterr().err


def test_yaml_config_with_command_line_overrides(demo, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("max-steps: 2\nbatch_size: 32\nlambda_heat: 0.5\nlr: 0.001\n")
    out = tmp_path / "run"
    assert _train(demo, out, "--config", str(cfg), "--lr", "0.003") == 0
    used = _metrics(out)["config"]
    # _train passes --batch-size 16: the command line wins over the file, the file over the defaults
    assert (used["max_steps"], used["batch_size"], used["lambda_heat"], used["lr"]) == (2, 16, 0.5, 0.003)
    assert _metrics(out)["models"]["luab"]["steps"] == 2


def test_val_data_flag_repeated_or_with_several_values():
    from luab_fast.train.config import load_config

    repeated = load_config(["--val-data", "a=X", "--val-data", "b=Y"]).val_data
    together = load_config(["--val-data", "a=X", "b=Y"]).val_data
    assert repeated == together == ["a=X", "b=Y"]  # argparse's default action kept only the last flag


def test_val_data_split_named_twice_is_an_error(demo, tmp_path, capsys):
    assert _train(demo, tmp_path / "o", "--max-steps", "1", "--val-data", f"a={demo.train}", f"a={demo.iid}") == 2
    assert "--val-data: split name 'a' given twice" in capsys.readouterr().err


@pytest.fixture()
def folder_with_an_extra_image(demo, tmp_path):
    """The demo's train split plus one image (a copy under a new id) that its byproduct store lacks."""
    data = tmp_path / "train"
    shutil.copytree(demo.train, data)
    first = sorted(data.glob("*/*.JPEG"))[0]
    shutil.copy(first, first.with_name(first.parent.name + "_999999.JPEG"))
    return data


def test_store_missing_images_weight_zero_or_strict(demo, folder_with_an_extra_image, tmp_path, capsys):
    data = folder_with_an_extra_image
    args = ["--data", str(data), "--byproducts", str(demo.store), "--device", "cpu", "--backend", "torchvision",
            "--batch-size", "16", "--no-compare", "--max-steps", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().out
    n = len(list(data.glob("*/*.JPEG")))
    assert f"1 of {n} training images have no byproducts (weight 0)" in said and "_999999" in said
    assert main([*args, "--out", str(tmp_path / "b"), "--strict"]) == 1  # the store lacks images: bad data
    err = capsys.readouterr().err
    assert "--byproducts" in err and "--strict" in err


def test_store_of_another_dataset_is_an_error(demo, tmp_path, capsys):
    from luab_fast.data import make_demo

    other = make_demo(tmp_path / "other", seed=0, size="tiny")
    renamed = tmp_path / "renamed"
    for f in other.train.glob("*/*.JPEG"):  # the same pictures under other ids
        (renamed / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, renamed / f.parent.name / f"x{f.name}")
    assert main(["--data", str(renamed), "--byproducts", str(demo.store), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--backend", "torchvision", "--max-steps", "1", "--no-compare"]) == 1
    assert "holds none of the 200 training images" in capsys.readouterr().err


def _nan_at(step: int, term: str, monkeypatch):
    """Makes ``term`` of the loss NaN from the ``step``-th call of the step on (1-based, as the log counts)."""
    calls = {"n": 0}
    real = loop.luab_loss

    def loss_with_nan(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= step:
            nan = torch.tensor(float("nan"))
            parts = {**parts, term: parts[term] + nan}
            loss = loss + nan
        return loss, parts

    monkeypatch.setattr(loop, "luab_loss", loss_with_nan)


@pytest.mark.parametrize("nan_step", [3, 4])  # between checkpoints, and on a checkpoint step
def test_nan_loss_stops_names_the_term_and_keeps_the_last_good_checkpoint(demo, tmp_path, capsys, monkeypatch,
                                                                          nan_step):
    _nan_at(nan_step, "heat", monkeypatch)
    out = tmp_path / "run"
    assert _train(demo, out, "--max-steps", "8", "--checkpoint-every", "2") == 2
    err = capsys.readouterr().err
    assert f"luab step {nan_step}: the heat term went nan" in err and "last good checkpoint" in err
    saved = torch.load(out / "luab" / "last.pt", weights_only=False)
    assert saved["state"]["step"] == 2  # the checkpoint before the NaN, not one after it
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert [r["step"] for r in saved["state"]["history"]] == [1, 2]
    assert not list((out / "luab").glob(".*.tmp*")) and not (out / "metrics.json").exists()


def test_batch_larger_than_the_data_is_an_error(demo, tmp_path, capsys):
    assert _train(demo, tmp_path / "o", "--batch-size", "256", "--max-steps", "1") == 2
    assert "--batch-size 256 is larger than the 200 training images" in capsys.readouterr().err


def test_localisation_scored_against_the_stores_boxes(demo, tmp_path, capsys):
    """User data: the ILSVRC boxes an ImageNet-AB store carries score the predicted peak and point on any
    split holding those images (here the training images themselves, evaluated as a split)."""
    from luab_fast.train.inputs import store_boxes

    boxes = store_boxes(demo.store)
    manifest = json.loads(demo.manifest.read_text())
    truth = {it["stem"]: [v / manifest["canvas"] for v in it["box"]] for it in manifest["images"]}
    assert len(boxes) == 200 and all(b.shape == (1, 4) for b in boxes.values())
    for stem, b in boxes.items():  # the XML's boxes are the demo's digit boxes
        assert abs(b[0] - truth[stem]).max() < 0.02
    out = tmp_path / "run"
    assert _train(demo, out, "--max-steps", "2", "--val-data", f"ood={demo.train}") == 0
    ev = _metrics(out)["models"]["luab"]["eval"]["ood"]
    assert ev["boxed_images"] == 200 and 0 <= ev["pointing_heat"] <= 1 and 0 <= ev["pointing_point"] <= 1
    said = capsys.readouterr().out
    assert "200 images of the byproduct store have ILSVRC boxes" in said
    assert "luab on ood: heat-map peak inside the annotated box on" in said
    assert (out / "attention_ood.png").is_file()  # the figure draws the store's [n, 4] boxes too


@pytest.mark.parametrize("backbone, heat", [("swin_tiny_patch4_window7_224", (2, 2)),  # NHWC, patch 4 × 2³ merges
                                             ("efficientnet_b0", (4, 4))])  # NCHW, output stride 16
def test_nhwc_and_strided_backbones_give_their_maps(backbone, heat):
    from luab_fast.train.model import LUABModel

    model = LUABModel(backbone, 10, 16, image_size=64)
    assert model.heat_size(64) == heat
    logits, point, heat_pred = model(torch.randn(2, 3, 64, 64))
    assert (logits.shape, point.shape, heat_pred.shape) == ((2, 10), (2, 2), (2, *heat))
    heat_pred.square().sum().backward()  # the heat map is read off the backbone's last feature map
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("backbone", ["vit_tiny_patch16_224", "convnext_atto"])
def test_other_timm_backbones_train(demo, tmp_path, backbone):
    """Any timm backbone: a ViT (tokens laid out on their patch grid, its own input size, no output_stride) and
    a ConvNeXt; the heat targets are rasterised at the feature map the backbone really has."""
    out = tmp_path / "run"
    assert _train(demo, out, "--model", backbone, "--image-size", "32", "--max-steps", "2",
                  "--val-data", f"seen={demo.train}") == 0
    m = _metrics(out)["models"]["luab"]
    assert m["steps"] == 2 and 0 <= m["eval"]["seen"]["top1"] <= 1


def test_unknown_backbone_is_a_clear_error(demo, tmp_path, capsys):
    assert _train(demo, tmp_path / "o", "--model", "resnet_51", "--max-steps", "1") == 2
    assert "--model 'resnet_51'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def label_maps(demo, tmp_path_factory):
    """A ReLabel-format store for the demo's train images but the first 20 (sorted order): every cell scores the
    class after the image's own first (5.0), its own second (1.0), so pooled targets point away from the folder."""
    from luab_fast.data.source import list_images
    from luab_fast.relabel import pack_label_maps

    images = list_images(demo.train)
    src = tmp_path_factory.mktemp("maps")
    for path, label in list(zip(images.files, images.labels.tolist()))[20:]:
        scores = torch.tensor([5.0, 1.0]).view(2, 1, 1).expand(2, 4, 4)
        classes = torch.tensor([(label + 1) % 10, label], dtype=torch.float32).view(2, 1, 1).expand(2, 4, 4)
        (src / images.classes[label]).mkdir(exist_ok=True)
        torch.save(torch.stack([scores, classes]).contiguous(), src / images.classes[label] / f"{Path(path).stem}.pt")
    res = pack_label_maps(src, src.parent / "maps.store", num_classes=10, progress=False)
    assert res.problems == [] and res.rows == len(images) - 20
    return res.path, images


@pytest.mark.parametrize("soft", [False, True])
def test_label_maps_fall_back_to_the_labels_target_not_the_folder(label_maps, soft):
    """Images the label-map store lacks take their --labels target (aggregated label or posterior), the
    others ReLabel's pooled target; the folder label is used only without --labels."""
    from luab_fast.data.targets import Targets
    from luab_fast.ops import label_pool_targets
    from luab_fast.relabel import LabelMapStore

    store_path, images = label_maps
    given = (torch.from_numpy(images.labels) + 2) % 10  # aggregated labels that differ from the folders
    table = torch.nn.functional.one_hot(given, 10).float() * 0.9 + 0.01 if soft else given
    t = Targets(images, torch.device("cpu"), label_maps=store_path, labels=table.numpy())
    rows = torch.tensor([0, 5, 19, 20, 21, 150])
    boxes = torch.tensor([[0.1, 0.2, 0.9, 0.7]]).repeat(6, 1)
    out = t({"rows": rows, "boxes": boxes, "flips": torch.zeros(6, dtype=torch.bool),
             "labels": torch.from_numpy(images.labels)[rows]})
    store = LabelMapStore.open(store_path).to("cpu")
    srows = torch.from_numpy(store.rows([images.stems[r] for r in rows[3:].tolist()]))
    pooled = label_pool_targets(*store.tensors(), boxes[3:], 10, rows=srows)
    torch.testing.assert_close(out["target"][3:], pooled)
    assert (pooled.argmax(1) == (torch.from_numpy(images.labels)[rows[3:]] + 1) % 10).all()
    expect = table[rows[:3]] if soft else torch.nn.functional.one_hot(given[rows[:3]], 10).float()
    assert torch.equal(out["target"][:3], expect)


@pytest.mark.parametrize("sources", [(), ("hard",), ("soft",), ("maps",), ("maps", "hard"), ("maps", "soft")])
def test_class_target_takes_the_first_source_that_has_one(label_maps, sources):
    """label map > posterior > hard label > folder label, image by image: the batch carries one class target,
    whatever the sources, and the images the label-map store lacks (rows 0-19) take the next source's."""
    from luab_fast.data.targets import Targets

    store_path, images = label_maps
    folder = torch.from_numpy(images.labels)
    hard = (folder + 2) % 10
    soft = torch.nn.functional.one_hot((folder + 4) % 10, 10).float() * 0.9 + 0.01
    given = hard.numpy() if "hard" in sources else soft.numpy() if "soft" in sources else None
    t = Targets(images, torch.device("cpu"), label_maps=store_path if "maps" in sources else None, labels=given)
    rows = torch.tensor([0, 19, 20, 150])
    out = t({"rows": rows, "boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(4, 1),
             "flips": torch.zeros(4, dtype=torch.bool), "labels": folder[rows]})
    assert list(out) == ["target"]  # no byproduct store: nothing else
    next_source = soft if "soft" in sources else hard if "hard" in sources else folder
    want = next_source[rows]
    if "maps" in sources:  # the store's maps score the class after the folder's; its two first rows lack one
        want = torch.nn.functional.one_hot(want, 10).float() if want.dim() == 1 else want
        assert torch.equal(out["target"][:2], want[:2])
        assert (out["target"][2:].argmax(1) == (folder[rows[2:]] + 1) % 10).all()
    else:
        assert torch.equal(out["target"], want)


def test_coverage_names_what_each_store_lacks(demo, label_maps):
    from luab_fast.data.targets import Targets

    store_path, images = label_maps
    alone = Targets(images, torch.device("cpu"), label_maps=store_path).coverage()
    assert [(c.option, len(c.lacking), c.images, c.fallback) for c in alone] == [
        ("--label-maps", 20, 200, "no label map (their folder label is used)")]
    assert alone[0].lacking == tuple(images.stems[:20])
    both = Targets(images, torch.device("cpu"), byproducts=demo.store, label_maps=store_path,
                   labels=images.labels, heat_size=(2, 2)).coverage()
    assert [(c.option, len(c.lacking), c.fallback) for c in both] == [
        ("--byproducts", 0, "no byproducts (weight 0)"),
        ("--label-maps", 20, "no label map (their --labels target is used)")]
    assert Targets(images, torch.device("cpu")).coverage() == []


def test_targets_check_their_classes(demo, label_maps):
    """The class sources are checked against the data's classes where they are read, for any caller."""
    from luab_fast.data.targets import Targets

    store_path, images = label_maps
    with pytest.raises(ValueError, match=r"--labels: label ids must lie in \[0, 10\) \(the training data's "
                                         r"classes\), got \[0, 12\]"):
        Targets(images, torch.device("cpu"), labels=np.where(np.arange(len(images)) == 5, 12, images.labels))
    with pytest.raises(ValueError, match="labels: posteriors have 9 columns, the label-map store 10 classes"):
        Targets(images, torch.device("cpu"), label_maps=store_path, labels=np.full((len(images), 9), 1 / 9))
    with pytest.raises(ValueError, match="heat_size is required with byproducts"):
        Targets(images, torch.device("cpu"), byproducts=demo.store)
    with pytest.raises(ValueError, match=r"heat_size must be \(h, w\) with h, w >= 1, got \(0, 4\)"):
        Targets(images, torch.device("cpu"), byproducts=demo.store, heat_size=(0, 4))


def test_training_with_label_maps(demo, label_maps, tmp_path, capsys):
    store_path, _ = label_maps
    out = tmp_path / "run"
    assert _train(demo, out, "--label-maps", str(store_path), "--max-steps", "2") == 0
    said = capsys.readouterr().out
    assert "20 of 200 training images have no label map (their folder label is used)" in said
    assert _metrics(out)["models"]["luab"]["steps"] == 2
    assert _train(demo, tmp_path / "strict", "--label-maps", str(store_path), "--max-steps", "1", "--strict") == 1
    assert "--label-maps: luab: 20 of 200 training images have no label map" in capsys.readouterr().err


def test_label_maps_of_another_class_count_is_an_error(demo, tmp_path, capsys):
    from luab_fast.relabel import pack_label_maps

    src = tmp_path / "maps" / "n0"
    src.mkdir(parents=True)
    from luab_fast.data.source import list_images

    stem = list_images(demo.train).stems[0]
    torch.save(torch.stack([torch.ones(1, 2, 2), torch.full((1, 2, 2), 999.0)]), src / f"{stem}.pt")
    store = pack_label_maps(src.parent, tmp_path / "maps.store", progress=False).path  # 1,000 classes
    assert _train(demo, tmp_path / "o", "--label-maps", str(store), "--max-steps", "1") == 1
    assert "--label-maps: the store's maps score 1000 classes, the training data has 10" in capsys.readouterr().err


def test_demo_run_takes_labels_given(demo, tmp_path, capsys):
    """--labels on the demo (e.g. python -m luab_fast.annotate's labels_<method>.csv) replaces the demo's own
    aggregated crowd: a file lacking one training image is refused by name, so it was the one read."""
    truth = pd.read_csv(demo.truth, dtype={"task": str})
    given = tmp_path / "labels.csv"
    truth.iloc[1:].to_csv(given, index=False)
    argv = ["--demo-size", "tiny", "--demo-root", str(demo.root), "--out", str(tmp_path / "o"), "--device", "cpu",
            "--backend", "torchvision", "--batch-size", "16", "--no-compare", "--max-steps", "1"]
    assert main([*argv, "--labels", str(given)]) == 1
    assert f"labels CSV {given} lacks 1 of the source's images" in capsys.readouterr().err
    truth.to_csv(given, index=False)
    assert main([*argv, "--labels", str(given)]) == 0
    assert "aggregated labels agree with the truth" not in capsys.readouterr().out
