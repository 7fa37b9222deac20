"""Starting points and checkpoints of python -m luab_fast.train (issue 20), tiny runs on the CPU: --pretrained-path
with a whole timm model's state dict (its classifier mapped to the class head where it fits), --pretrained with a
local --pretrained-file (timm's pretrained_cfg_overlay) and a clear failure without network, --checkpoint-hist
keeping the best N epochs, and --eval-only reproducing exactly the metrics the training run wrote."""

from __future__ import annotations

import json
import socket

import pytest
import timm
import torch

from luab_fast.train.model import LUABModel
from luab_fast.train.run import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


def _common(demo, out):
    return ["--out", str(out), "--device", "cpu", "--backend", "torchvision", "--batch-size", "16",
            "--image-size", "32", "--byproducts", str(demo.store)]


def _train(demo, out, *extra):
    return main(["--data", str(demo.train), *_common(demo, out), "--no-compare", *extra])


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _same_backbone(model: LUABModel, timm_model) -> bool:
    own = model.backbone.state_dict()
    return all(torch.equal(v, timm_model.state_dict()[k]) for k, v in own.items())


# --- starting points ------------------------------------------------------------------------------------------

def test_pretrained_path_whole_timm_model_with_a_classifier_that_fits(tmp_path):
    source = timm.create_model("resnet10t", num_classes=10)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = LUABModel("resnet10t", 10, 16, str(tmp_path / "w.pth"), image_size=32)
    assert _same_backbone(model, source)
    assert torch.equal(model.classifier.weight, source.fc.weight) and torch.equal(model.classifier.bias, source.fc.bias)


def test_pretrained_path_classifier_that_does_not_fit_is_skipped_and_named(tmp_path):
    source = timm.create_model("resnet10t", num_classes=1000)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pth")
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"its classifier fc.weight \(1000, 512\) does not fit the class head "
                                         r".*\(10, 512\): skipped"):
        model = LUABModel("resnet10t", 10, 16, str(tmp_path / "w.pth"), image_size=32)
    assert _same_backbone(model, source)
    torch.manual_seed(0)
    assert torch.equal(model.classifier.weight, LUABModel("resnet10t", 10, 16, image_size=32).classifier.weight)


def test_pretrained_path_vit_head_by_pretrained_cfg(tmp_path):
    """A ViT's classifier is ``head`` (its pretrained_cfg['classifier']), not ``fc``."""
    source = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = LUABModel("vit_tiny_patch16_224", 10, 16, str(tmp_path / "w.pth"), image_size=32)
    assert torch.equal(model.classifier.weight, source.head.weight)


def test_pretrained_file_is_timms_pretrained_cfg_overlay(tmp_path):
    source = timm.create_model("resnet10t")  # its 1000-class fc: timm drops it for num_classes=0
    torch.save(source.state_dict(), tmp_path / "resnet10t.pth")
    model = LUABModel("resnet10t", 10, 16, image_size=32, pretrained=True,
                      pretrained_file=str(tmp_path / "resnet10t.pth"))
    assert _same_backbone(model, source)


def test_pretrained_file_of_another_architecture_names_the_mismatch(tmp_path):
    from luab_fast._cli import DataError

    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(DataError, match=r"--pretrained-file .*r18.pth: cannot load it as resnet10t's pretrained "
                                        r"weights \(.*(size mismatch|Missing key)"):
        LUABModel("resnet10t", 10, 16, image_size=32, pretrained=True, pretrained_file=str(tmp_path / "r18.pth"))


def test_pretrained_without_network_fails_clearly(monkeypatch, tmp_path):
    from luab_fast._cli import DataError

    def refuse(self, *a, **k):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    with pytest.raises(DataError, match=r"--pretrained: cannot get timm's pretrained weights of resnet10t .*"
                                        r"without network access.*--pretrained-file FILE"):
        LUABModel("resnet10t", 10, 16, image_size=32, pretrained=True)


def test_pretrained_file_through_main(demo, tmp_path, capsys):
    torch.save(timm.create_model("resnet10t").state_dict(), tmp_path / "w.pth")
    assert _train(demo, tmp_path / "o", "--max-steps", "1", "--pretrained", "--pretrained-file",
                  str(tmp_path / "w.pth")) == 0
    assert _metrics(tmp_path / "o")["config"]["pretrained_file"] == str(tmp_path / "w.pth")


# --- --checkpoint-hist and --eval-only ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hist_run(demo, tmp_path_factory):
    """3 epochs of 12 steps, EMA on, the best 2 epochs kept by iid top-1."""
    out = tmp_path_factory.mktemp("hist") / "run"
    assert _train(demo, out, "--epochs", "3", "--checkpoint-hist", "2", "--model-ema", "--model-ema-decay", "0.9",
                  "--val-data", f"iid={demo.iid}", f"ood={demo.ood}") == 0
    return out


def _epoch_top1(out):
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return {r["epoch"]: r["iid_top1"] for r in recs if "iid_top1" in r}


def test_checkpoint_hist_keeps_the_best_n_epochs(hist_run):
    top1 = _epoch_top1(hist_run)
    assert sorted(top1) == [1, 2, 3]
    best = sorted(top1, key=lambda e: (-top1[e], e))[:2]
    files = sorted(p.name for p in (hist_run / "luab").glob("*.pt"))
    assert files == sorted(["last.pt", "model_best.pt", *(f"checkpoint-{e}.pt" for e in best)])
    b = torch.load(hist_run / "luab" / "model_best.pt", weights_only=True)
    c = torch.load(hist_run / "luab" / f"checkpoint-{best[0]}.pt", weights_only=True)
    assert b["state"]["epoch"] == best[0] and all(torch.equal(b["model"][k], c["model"][k]) for k in b["model"])
    last = torch.load(hist_run / "luab" / "last.pt", weights_only=True)
    assert [int(e) for _, e in last["state"]["kept"]] == best  # the ranking a resumed run continues


def test_checkpoint_hist_continues_its_ranking_after_a_kill(demo, tmp_path):
    """Killed in epoch 2 and resumed: the same best checkpoint, ranking and files as an uninterrupted run (the
    ranking travels in last.pt; a resumed run continues bit for bit)."""
    import os
    import signal
    import subprocess
    import sys

    def run(out, *extra, env=None):
        args = ["--data", str(demo.train), *_common(demo, out), "--no-compare", "--epochs", "2", "--deterministic",
                "--checkpoint-every", "6", "--checkpoint-hist", "1", "--val-data", f"iid={demo.iid}", *extra]
        return subprocess.run([sys.executable, "-m", "luab_fast.train", *args], capture_output=True, text=True,
                              timeout=600, env={**os.environ, **(env or {})})

    straight = run(tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert run(tmp_path / "b", env={"LUAB_FAST_KILL_AT_STEP": "18"}).returncode == -signal.SIGKILL
    resumed = run(tmp_path / "b", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (tmp_path / d / "luab" for d in "ab")
    assert sorted(p.name for p in a.glob("*.pt")) == sorted(p.name for p in b.glob("*.pt"))
    saved = [torch.load(d / "last.pt", weights_only=True)["state"]["kept"] for d in (a, b)]
    assert saved[0] == saved[1] and len(saved[0]) == 1
    best = [torch.load(d / "model_best.pt", weights_only=True)["model"] for d in (a, b)]
    assert all(torch.equal(best[0][k], best[1][k]) for k in best[0])


def test_eval_only_last_equals_what_training_wrote(demo, hist_run, tmp_path):
    trained = _metrics(hist_run)["models"]["luab"]["eval"]
    val = ["--val-data", f"iid={demo.iid}", f"ood={demo.ood}"]
    assert main(["--eval-only", str(hist_run / "luab" / "last.pt"), *_common(demo, tmp_path / "e"), *val]) == 0
    got = _metrics(tmp_path / "e")
    assert got["models"]["luab"]["eval"] == {k: trained[k] for k in ("iid", "ood")}  # exactly, pointing included
    assert got["models"]["luab"]["steps"] == 36
    assert main(["--eval-only", str(hist_run / "luab" / "last.pt"), "--ema", *_common(demo, tmp_path / "m"),
                 *val]) == 0
    assert _metrics(tmp_path / "m")["models"]["luab"]["eval"] == {k: trained[k] for k in ("iid_ema", "ood_ema")}


def test_eval_only_hist_checkpoint_equals_its_logged_top1(demo, hist_run, tmp_path):
    top1 = _epoch_top1(hist_run)
    best = max(top1, key=lambda e: (top1[e], -e))
    assert main(["--eval-only", str(hist_run / "luab" / "model_best.pt"), *_common(demo, tmp_path / "e"),
                 "--val-data", f"iid={demo.iid}"]) == 0
    assert _metrics(tmp_path / "e")["models"]["luab"]["eval"]["iid"]["top1"] == top1[best]


def test_eval_only_plain_timm_state_dict(demo, hist_run, tmp_path):
    """A timm model of --model whose fc is the trained baseline's classifier: the same scores as the trainer's
    baseline checkpoint (avg pooling = timm's own)."""
    out = tmp_path / "b"
    assert main(["--data", str(demo.train), *_common(demo, out), "--max-steps", "2", "--val-data",
                 f"iid={demo.iid}"]) == 0
    saved = torch.load(out / "baseline" / "last.pt", weights_only=True)["model"]
    plain = {k.removeprefix("backbone."): v for k, v in saved.items() if k.startswith("backbone.")}
    plain["fc.weight"], plain["fc.bias"] = saved["classifier.weight"], saved["classifier.bias"]
    torch.save(plain, tmp_path / "timm.pth")
    args = ["--device", "cpu", "--backend", "torchvision", "--batch-size", "16", "--image-size", "32",
            "--val-data", f"iid={demo.iid}", "--data", str(demo.train)]
    assert main(["--eval-only", str(tmp_path / "timm.pth"), "--out", str(tmp_path / "e"), *args]) == 0
    trained = _metrics(out)["models"]["baseline"]["eval"]["iid"]
    assert _metrics(tmp_path / "e")["models"]["baseline"]["eval"]["iid"] == trained
