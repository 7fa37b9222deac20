"""``python -m luab_fast.relabel generate --model RUN/<model>/last.pt``: a teacher trained with
``python -m luab_fast.train`` writes label maps as it was trained (its output stride, its classes), without
exporting it to a timm state dict first."""

from __future__ import annotations

import pytest
import torch

from luab_fast.relabel.generate import dense_scores, load_model
from luab_fast.train.model import LUABModel
from luab_fast.train.run import main as train


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from luab_fast.data import make_demo

    root = tmp_path_factory.mktemp("teacher")
    demo = make_demo(root / "tiny", seed=0, size="tiny")
    out = root / "run"
    assert train(["--data", str(demo.train), "--out", str(out), "--device", "cpu", "--backend", "torchvision",
                  "--batch-size", "16", "--image-size", "32", "--max-steps", "2", "--no-compare"]) == 0
    (ckpt,) = out.glob("*/last.pt")
    return demo, ckpt


def test_a_trainer_checkpoint_is_rebuilt_as_trained(teacher):
    _, ckpt = teacher
    net = load_model(str(ckpt))
    saved = torch.load(ckpt, weights_only=True)
    assert isinstance(net, LUABModel) and not net.training
    assert all(torch.equal(v, saved["model"][k]) for k, v in net.state_dict().items())
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        maps = dense_scores(net, x)
        logits, _, _ = net(x)
    assert maps.shape[:2] == (3, logits.shape[1]) and maps.shape[2] == 64 // saved["run"]["output_stride"]
    if net.pool == "avg":  # a linear head: the mean of the per-location scores is the pooled logit
        torch.testing.assert_close(maps.mean((2, 3)), logits, rtol=1e-5, atol=1e-5)


def test_generate_cli_takes_the_checkpoint(teacher, tmp_path):
    from luab_fast.relabel import cli as relabel_cli

    demo, ckpt = teacher
    out = tmp_path / "maps"
    assert relabel_cli.main(["generate", "--model", str(ckpt), "--images", str(demo.train), "--out", str(out),
                             "--size", "32", "--device", "cpu", "--quiet"]) == 0
    written = sorted(out.rglob("*.pt"))
    assert len(written) == sum(1 for p in demo.train.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
