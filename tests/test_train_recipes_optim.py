"""The optimiser step on timm's factories (train/optim.py), each option checked for what it changes: every --opt
builds and steps, weight decay skips norms and biases, --layer-decay scales the lower layers, the logged
learning rates equal timm's scheduler step for step, --grad-accum-steps equals one larger batch, --clip-grad caps
the gradients, the model options reach timm.create_model. CPU, small models, in process."""

from __future__ import annotations

import json

import pytest
import torch

from luab_fast.train import optim
from luab_fast.train.config import TrainConfig, load_config
from luab_fast.train.loop import Trainer
from luab_fast.train.model import LUABModel
from luab_fast.train.run import main

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from luab_fast.data import make_demo

    return make_demo(tmp_path_factory.mktemp("demo") / "tiny", seed=0, size="tiny")


class Batches:
    """A loader of fixed batches (what Trainer reads of one), labels only."""

    has_byproducts = False
    world_size = 1

    def __init__(self, batches, classes=10):
        self.batches = batches
        self.images = type("Images", (), {"classes": tuple(range(classes)), "__len__": lambda s: 0})()

    def __len__(self):
        return len(self.batches)

    def set_epoch(self, epoch):
        pass

    def iter_from(self, k):
        return iter(self.batches[k:])


def _batches(n, size, seed=0, side=32):
    g = torch.Generator().manual_seed(seed)
    return [{"images": torch.randn(size, 3, side, side, generator=g),
             "target": torch.randint(0, 10, (size,), generator=g)} for _ in range(n)]


def _trainer(tmp_path, model, batches, **cfg):
    cfg = TrainConfig(image_size=32, compile="off", checkpoint_every=10**9, **cfg)
    t = Trainer("m", model, Batches(batches), cfg, CPU, tmp_path, lambda m: None)
    t.save = lambda: None
    return t


@pytest.mark.parametrize("name", ["sgd", "nesterov", "momentum", "adamw", "adamp", "lamb", "lars"])
def test_each_optimiser_builds_and_steps(tmp_path, name):
    torch.manual_seed(0)
    model = LUABModel("resnet10t", 10, 16)
    t = _trainer(tmp_path, model, _batches(1, 4), opt=name, max_steps=1, warmup_steps=0)
    before = [p.detach().clone() for p in model.parameters()]
    t.fit(lambda r: None, lambda e: None)
    assert t.state.step == 1
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    # weight decay on the weights only: norms and biases (1-d) sit in a group of weight decay 0, as in timm
    decay = {id(p) for g in t.opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay and all((p.ndim > 1) == (id(p) in decay) for p in model.parameters())


def test_sgd_names_and_options_reach_the_optimiser(tmp_path):
    model = LUABModel("resnet10t", 10, 16)
    sgd = optim.build_optimizer(model, TrainConfig(opt="sgd", momentum=0.8), CPU)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    assert not optim.build_optimizer(model, TrainConfig(opt="momentum"), CPU).defaults["nesterov"]
    adamw = optim.build_optimizer(model, TrainConfig(opt="adamw", opt_eps=1e-6, opt_betas=[0.8, 0.9]), CPU)
    assert adamw.defaults["eps"] == 1e-6 and adamw.defaults["betas"] == (0.8, 0.9)


def test_layer_decay_scales_the_lower_layers(tmp_path):
    model = LUABModel("resnet10t", 10, 16)
    opt = optim.build_optimizer(model, TrainConfig(layer_decay=0.5), CPU)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert scale[id(model.classifier.weight)] == 1.0 and scale[id(model.heat_head.weight)] == 1.0
    stem = model.backbone.conv1[0].weight
    assert scale[id(stem)] < scale[id(model.backbone.layer4[0].conv1.weight)] < 1.0
    assert len(set(scale.values())) > 3  # one scale per timm layer group, not one for all


def _timm_lrs(cfg: TrainConfig, updates_per_epoch: int, steps: int) -> list[float]:
    """The learning rates timm's own scheduler gives (its train.py: num_epochs, updates_per_epoch,
    step_update(num_updates) after each update)."""
    from timm.scheduler import create_scheduler_v2

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched, _ = create_scheduler_v2(opt, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                   warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, decay_epochs=cfg.decay_epochs,
                                   decay_milestones=cfg.decay_milestones or (90, 180, 270),
                                   decay_rate=cfg.decay_rate, step_on_epochs=False,
                                   updates_per_epoch=updates_per_epoch)
    out = []
    for k in range(steps):
        out.append(opt.param_groups[0]["lr"])
        sched.step_update(k + 1)
    return out


def test_logged_learning_rates_equal_timms_scheduler(demo, tmp_path):
    """A whole run (5 batches an epoch, 2 batches a step: 3 updates an epoch, the last of one batch, as timm
    counts them): log.jsonl's lr of every step is timm's, exactly."""
    args = ["--data", str(demo.train), "--out", str(tmp_path / "o"), "--device", "cpu", "--backend", "torchvision",
            "--batch-size", "40", "--image-size", "32", "--epochs", "2", "--sched", "cosine",
            "--warmup-epochs", "1", "--warmup-lr", "1e-4", "--min-lr", "1e-5", "--grad-accum-steps", "2"]
    assert main(args) == 0
    logged = [r["lr"] for r in map(json.loads, (tmp_path / "o" / "log.jsonl").read_text().splitlines())
              if "loss" in r]
    assert len(logged) == 6
    assert logged == _timm_lrs(load_config(args), 3, 6)


@pytest.mark.parametrize("options", [
    ["--sched", "step", "--decay-epochs", "1", "--decay-rate", "0.5", "--warmup-epochs", "0.5"],
    ["--sched", "multistep", "--decay-milestones", "1", "2", "--warmup-epochs", "1"],
    ["--sched", "poly", "--decay-rate", "2", "--min-lr", "1e-4", "--warmup-epochs", "0.25"],
    ["--sched", "cosine", "--warmup-epochs", "0.5", "--min-lr", "1e-4"],
])
def test_each_schedule_equals_timms(options):
    """The schedule the trainer builds, stepped as the trainer steps it, for 4 epochs of 7 updates."""
    cfg = load_config(["--epochs", "4", *options])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = optim.build_scheduler(opt, cfg, optim.schedule_lengths(cfg, 7))
    ours = []
    for k in range(28):
        ours.append(optim.current_lr(opt))
        sched.step_update(k + 1)
    assert ours == _timm_lrs(cfg, 7, 28)


def test_warmup_steps_and_max_steps_span_the_run():
    cfg = load_config(["--max-steps", "10", "--warmup-steps", "3", "--warmup-lr", "0"])
    lengths = optim.schedule_lengths(cfg, 100)
    assert (lengths.total, lengths.length) == (10, 10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = optim.build_scheduler(opt, cfg, lengths)
    lrs = []
    for k in range(11):
        lrs.append(optim.current_lr(opt))
        sched.step_update(k + 1)
    assert lrs[0] == 0 and lrs[3] == pytest.approx(cfg.lr * 0.5 * (1 + torch.cos(torch.tensor(0.3 * torch.pi))))
    assert lrs[10] == 0  # cosine to --min-lr at the run's last step


def _no_bn_model():
    # ConvNeXt normalises each image on its own (LayerNorm): a batch of 16 and two of 8 see the same statistics.
    # A BatchNorm model would not: its batch statistics (and running means) depend on which images share a batch.
    torch.manual_seed(0)
    return LUABModel("convnext_atto", 10, 32)


def test_accumulated_steps_equal_one_step_of_the_whole_batch(tmp_path):
    """SGD with momentum: its first step moves each weight by lr × gradient, so the weights compare the
    gradients. (Adam's first step is lr × g / (|g| + eps): for the near-zero gradients the float32 summation
    order decides, and the comparison would measure that, not the accumulation.)"""
    small = _batches(2, 8, seed=1)
    whole = [{k: torch.cat([b[k] for b in small]) for k in small[0]}]
    weights = []
    for batches, accum in ((small, 2), (whole, 1)):
        model = _no_bn_model()
        t = _trainer(tmp_path, model, batches, opt="momentum", grad_accum_steps=accum, max_steps=1, warmup_steps=0,
                     lr=0.01)
        t.fit(lambda r: None, lambda e: None)
        assert t.state.step == 1
        weights.append([p.detach().clone() for p in model.parameters()])
    moved = max((a - p).abs().max().item() for a, p in zip(weights[1], _no_bn_model().parameters()))
    err = max((a - b).abs().max().item() for a, b in zip(*weights))
    assert moved > 1e-4 and err < 1e-6 * max(1.0, moved) + 1e-7, (moved, err)


@pytest.mark.parametrize("mode, limit", [("norm", 0.05), ("value", 1e-4), ("agc", 0.01)])
def test_clipping_caps_the_gradients(tmp_path, mode, limit):
    torch.manual_seed(0)
    model = LUABModel("resnet10t", 10, 16)
    t = _trainer(tmp_path, model, _batches(1, 4), clip_grad=limit, clip_mode=mode, max_steps=1, warmup_steps=0)
    seen = {}
    real = t.amp.scaler.step

    def record(opt, *a, **k):  # the gradients the optimiser steps on
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        seen["norm"] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        seen["max"] = max(g.abs().max().item() for g in grads)
        ratio = [(torch.linalg.vector_norm(g) / torch.linalg.vector_norm(p).clamp(min=1e-3)).item()
                 for p, g in zip(model.parameters(), grads) if p.ndim > 1]
        seen["agc"] = max(ratio)
        return real(opt, *a, **k)

    t.amp.scaler.step = record
    t.fit(lambda r: None, lambda e: None)
    if mode == "norm":
        assert seen["norm"] <= limit * (1 + 1e-5)
    elif mode == "value":
        assert seen["max"] <= limit
    else:  # AGC clips each output unit's gradient to limit × that unit's weight norm: the whole tensor follows
        assert seen["agc"] <= limit * (1 + 1e-4)


def test_unclipped_gradients_are_larger_than_the_caps():
    """The caps above bind: the same step's gradients without clipping exceed each."""
    torch.manual_seed(0)
    model = LUABModel("resnet10t", 10, 16)
    b = _batches(1, 4)[0]
    torch.nn.functional.cross_entropy(model(b["images"])[0], b["target"]).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) > 0.05
    assert max(g.abs().max() for g in grads) > 1e-4


def test_model_options_reach_timm():
    model = LUABModel("resnet10t", 10, 16, drop=0.3, drop_path=0.2, model_kwargs={"stem_width": 16})
    assert model.head_drop.p == 0.3
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)
    assert model.backbone.conv1[0].out_channels == 12  # deep-tiered stem: 3/4 of stem_width (default 32 → 24)
    assert LUABModel("resnet10t", 10, 16).backbone.conv1[0].out_channels == 24
    with pytest.raises(ValueError, match=r"does not take one of \['not_an_arg'\] \(--drop-path, --model-kwargs\)"):
        LUABModel("resnet10t", 10, 16, model_kwargs={"not_an_arg": 1})


def test_amp_dtypes():
    assert optim.Amp(TrainConfig(), CPU).dtype == torch.float32  # the CPU default, as before
    assert optim.Amp(TrainConfig(), torch.device("cuda")).dtype == torch.bfloat16  # the CUDA default
    half = optim.Amp(TrainConfig(amp_dtype="float16"), CPU)
    assert half.dtype == torch.float16 and half.scaler.is_enabled()
    assert not optim.Amp(TrainConfig(amp_dtype="bfloat16"), CPU).scaler.is_enabled()


def test_bfloat16_autocast_trains_on_the_cpu(tmp_path):
    torch.manual_seed(0)
    model = LUABModel("resnet10t", 10, 16)
    t = _trainer(tmp_path, model, _batches(2, 4), amp_dtype="bfloat16", max_steps=2)
    t.fit(lambda r: None, lambda e: None)
    assert t.state.step == 2 and all(torch.isfinite(p).all() for p in model.parameters())
