"""Whole training steps per second (issue 7): our step (loader with crop windows + on-device targets + the
model with its heads + the fused loss, compiled on a GPU) beside the same backbone in a plain eager loop with a
torchvision DataLoader (labels only); and the cost of the LUAB extras (targets + heads + loss) over our
labels-only step. CPU: resnet10t at 64 px on the tiny demo (96 px JPEGs); GPU: ResNet-50 at 224, bf16 autocast,
channels_last (target ≥ 3,000 img/s on one H100, extras ≤ 3%) on the default demo's 5,000 training images
re-encoded at ImageNet's typical 500×375 (JPEG quality 90), so decoding costs what it costs on ImageNet. The
baseline's DataLoader gets as many workers as our decode threads.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from benchmarks._record import BASELINE, OURS, Plan, Recorder, Size


@dataclass(frozen=True)
class Steps(Size):
    n: int  # images per timed run
    model: str
    image_size: int
    batch: int
    unit: str = "images"

    @property
    def label(self) -> str:
        return f"{self.model} @ {self.image_size}px, batch {self.batch}"


GPU = torch.cuda.is_available()
SIZE = Steps(8192, "resnet50", 224, 256) if GPU else Steps(192, "resnet10t", 64, 32)
TARGET = "≥ 3,000 img/s on one H100 (ResNet-50, bf16)"
PLAN = Plan(SIZE, {BASELINE: 1, OURS: 1}, TARGET)
EXTRAS = Plan(SIZE, {BASELINE: 1, OURS: 1}, "LUAB extras ≤ 3% over labels-only")


def imagenet_sized(src: Path, dst: Path, size: tuple[int, int] = (500, 375), threads: int = 16) -> Path:
    """A copy of the ImageFolder tree ``src`` with every image resized to ``size`` (JPEG quality 90), same
    names: a store keyed by file stem in normalised coordinates fits the copy as it fits the original."""
    from PIL import Image

    files = sorted(src.glob("*/*.JPEG"))

    def one(f: Path) -> None:
        out = dst / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            im.convert("RGB").resize(size, Image.BICUBIC).save(out, quality=90)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, files))
    return dst


ROUNDS = 3  # timed runs per side, interleaved (base, luab, plain, base, ...) so drift hits all three alike


def _seconds_per_step(run_steps) -> float:
    """Seconds per step over one whole timed run."""
    if GPU:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = run_steps(None)
    if GPU:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / done


def trainer_run(train: Path, store: Any, device: torch.device, out: Path, threads: int, used: dict[str, str],
                size: Steps = SIZE, **options: Any):
    """run(limit) of the trainer users run (``Trainer.fit``: loader, targets, compiled step, the optimiser step,
    schedule, loss read-back and NaN guard), less its checkpoint writes; ``store``: the byproducts (LUAB) or
    None (labels only); ``options``: more TrainConfig fields (--model-ema, --clip-grad, ...)."""
    from luab_fast.data import build_loader
    from luab_fast.train.config import TrainConfig
    from luab_fast.train.loop import Trainer
    from luab_fast.train.model import LUABModel
    from luab_fast.train.run import augmentation

    gpu = device.type == "cuda"
    cfg = TrainConfig(image_size=size.image_size, model=size.model, batch_size=size.batch, warmup_steps=1,
                      checkpoint_every=10**9, **options)
    # pooled as python -m luab_fast.train pools them: attention for LUAB, avg for labels only
    pool = cfg.pool if store is not None else cfg.baseline_pool
    model = LUABModel(size.model, 10, 32 if gpu else 16, pool=pool).to(device)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    heat = model.heat_size(size.image_size)
    loader = build_loader(train, size.batch, device=device, image_size=size.image_size, threads=threads,
                          byproducts=store, heat_size=heat, channels_last=gpu, **augmentation(cfg))
    name = "luab" if store is not None else "labels"
    trainer = Trainer(name, model, loader, cfg, device, out, print)  # says if compile fails
    trainer.save = lambda: None  # timing the step, not the disk
    used["decode"] = f"{loader.backend} decode, {threads} threads"
    n_batches = size.n // size.batch

    def run(limit):
        start = trainer.state.step
        trainer.total = start + (limit or n_batches)
        trainer.fit(lambda record: None, lambda epoch: None)
        return trainer.state.step - start

    return run


def timed_interleaved(runners: dict[str, Any], rounds: int = ROUNDS) -> dict[str, list[float]]:
    """Seconds per step of each runner, ``rounds`` runs each, the runners taking turns, after one warm-up
    of two steps each (compile, pipeline build, allocator)."""
    for run in runners.values():
        run(2)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            times[name].append(_seconds_per_step(run))
    return times


def test_train_step_throughput(bench: Recorder, tmp_path) -> None:
    from torchvision import datasets, transforms

    from luab_fast.data import make_demo
    from luab_fast.data.loader import default_threads

    if GPU:  # as our Trainer sets it; set first, so the baseline's convolutions get the same cuDNN choice
        torch.backends.cudnn.benchmark = True
    paths = make_demo(tmp_path / "demo", size="default" if GPU else "tiny", progress=False)
    train = imagenet_sized(paths.train, tmp_path / "train_500x375") if GPU else paths.train
    threads = default_threads()
    used: dict[str, str] = {}  # what our loaders ran with, for the results
    device = torch.device("cuda" if GPU else "cpu")
    n_batches = SIZE.n // SIZE.batch
    amp = torch.autocast("cuda", torch.bfloat16) if GPU else torch.autocast("cpu", enabled=False)

    def _steps(epoch_batches, loss_of, opt):
        """run(limit): optimiser steps over successive epochs until ``limit`` (or the plan's) steps."""
        def run(limit):
            done, epoch, target = 0, 0, limit or n_batches
            while done < target:
                for batch in epoch_batches(epoch):
                    with amp:
                        loss = loss_of(*batch)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    done += 1
                    if done >= target:
                        break
                epoch += 1
            return done
        return run

    def ours(byproducts: bool):
        return trainer_run(train, paths.store if byproducts else None, device, tmp_path / f"ours{byproducts}",
                           threads, used)

    def baseline():
        import timm

        # the same network as ours: on the CPU ours runs at output stride 16 (the demo's, for a 4×4 heat map at
        # 64 px), which costs more than timm's default 32; comparing against 32 measured the stride, not the step
        model = timm.create_model(SIZE.model, num_classes=10, **({} if GPU else {"output_stride": 16})).to(device)
        tf = transforms.Compose([transforms.RandomResizedCrop(SIZE.image_size), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406],
                                                                             [0.229, 0.224, 0.225])])
        dl = torch.utils.data.DataLoader(datasets.ImageFolder(train, tf), batch_size=SIZE.batch, shuffle=True,
                                         num_workers=threads, drop_last=True, persistent_workers=True,
                                         pin_memory=GPU)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def epoch_batches(epoch):
            for x, y in dl:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        return _steps(epoch_batches, lambda x, y: F.cross_entropy(model(x), y), opt)

    times = timed_interleaved({"base": baseline(), "luab": ours(True), "plain": ours(False)})
    per_n = SIZE.n / SIZE.batch

    def stats(name):
        runs = sorted(t * per_n for t in times[name])
        return {"median_s": statistics.median(runs), "min_s": runs[0], "max_s": runs[-1], "rounds": len(runs)}

    how = used["decode"]
    bench.side("train_step", BASELINE, PLAN, impl=f"timm model, eager, torchvision DataLoader ({threads} workers), "
                                                  "labels only",
               stats=stats("base"))
    bench.side("train_step", OURS, PLAN,
               impl=f"luab_fast Trainer.fit: loader + targets + heads + fused loss (LUAB; {how})", stats=stats("luab"))
    bench.side("train_extras", BASELINE, EXTRAS, impl=f"luab_fast Trainer.fit, labels only ({how})",
               stats=stats("plain"))
    bench.side("train_extras", OURS, EXTRAS, impl=f"luab_fast Trainer.fit, labels + point + heat ({how})",
               stats=stats("luab"))
    overhead = statistics.median(times["luab"]) / statistics.median(times["plain"]) - 1
    img_s = SIZE.batch / statistics.median(times["luab"])
    detail = f"extras cost {100 * overhead:+.1f}%; LUAB step {img_s:,.0f} img/s"
    # each target is for one device: checked there (met or missed), n/a elsewhere (no check recorded)
    if on_h100():
        bench.check("train_step", PLAN, metric="LUAB step img/s", value=img_s, threshold=3000.0,
                    passed=img_s >= 3000, detail=detail)
    if GPU:
        bench.check("train_extras", EXTRAS, metric="LUAB extras overhead", value=overhead, threshold=0.03,
                    passed=overhead <= 0.03, detail=detail)
    print(f"\ntrain_step: {detail} (targets: {TARGET}; extras ≤ 3% on a GPU)")


def on_h100() -> bool:
    return GPU and "H100" in torch.cuda.get_device_name()


# seven short rounds a side (a round is 6 steps on the CPU, ~1 s): the fastest of three swung the EMA overhead
# from -0.4% to +7.1% across CI runs of one build on the 2-core VM
CASE_ROUNDS = 7


def extras_overhead(bench: Recorder, tmp_path, where: str, name: str, target: str, impl: str,
                    **options: Any) -> tuple[float, Plan, str]:
    """Our labels-only step with ``options`` (TrainConfig fields) against the same step without: CPU (resnet10t
    @ 64 px on the tiny demo) or GPU (ResNet-50 @ 224 on the default demo, bf16, compiled). Records both sides
    and returns the overhead from each side's fastest round (a shared 2-core VM's load only ever adds time; the
    medians go into the printed detail)."""
    from luab_fast.data import make_demo
    from luab_fast.data.loader import default_threads

    device = torch.device("cuda" if where == "gpu" else "cpu")
    size = Steps(4096, "resnet50", 224, 256) if where == "gpu" else Steps(192, "resnet10t", 64, 32)
    plan = Plan(size, {BASELINE: 1, OURS: 1}, target)
    paths = make_demo(tmp_path / "demo", size="default" if where == "gpu" else "tiny", progress=False)
    threads, used = default_threads(), {}
    runners = {"plain": trainer_run(paths.train, None, device, tmp_path / "plain", threads, used, size),
               "extras": trainer_run(paths.train, None, device, tmp_path / "extras", threads, used, size,
                                     **options)}
    times = timed_interleaved(runners, rounds=CASE_ROUNDS)
    per_n = size.n / size.batch

    def stats(side):
        runs = sorted(t * per_n for t in times[side])
        return {"median_s": statistics.median(runs), "min_s": runs[0], "max_s": runs[-1], "rounds": len(runs)}

    bench.side(name, BASELINE, plan, impl=f"luab_fast Trainer.fit, labels only ({used['decode']})",
               stats=stats("plain"))
    bench.side(name, OURS, plan, impl=impl, stats=stats("extras"))
    overhead = min(times["extras"]) / min(times["plain"]) - 1
    median = statistics.median(times["extras"]) / statistics.median(times["plain"]) - 1
    return overhead, plan, f"costs {100 * overhead:+.1f}% (fastest rounds; medians {100 * median:+.1f}%)"


# the cost of timm's EMA (ModelEmaV3, every step) + gradient clipping (global norm) over the plain step
EMA_CLIP = {"model_ema": True, "clip_grad": 1.0}
EMA_TARGET = "EMA + clipping ≤ 5% over the plain step"


@pytest.mark.parametrize("where", ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(
    not GPU, reason="needs a CUDA GPU"))])
def test_ema_and_clipping_cost(bench: Recorder, tmp_path, where) -> None:
    """--model-ema --clip-grad 1 against the plain step; the ≤ 5% target is checked on the CPU and the GPU."""
    name = f"train_ema_clip_{where}"
    overhead, plan, detail = extras_overhead(
        bench, tmp_path, where, name, EMA_TARGET,
        "the same + timm ModelEmaV3 + clip_grad_norm_ (--model-ema --clip-grad 1)", **EMA_CLIP)
    bench.check(name, plan, metric="EMA + clipping overhead", value=overhead, threshold=0.05,
                passed=overhead <= 0.05, detail=detail)


# the cost of RandAugment (host-drawn parameters, one affine per image in the decoder, photometric ops) + CutMix
# (pixels and targets mixed on the device) over the plain step (issue 21)
AUG_MIX = {"aa": "rand-m9-mstd0.5", "cutmix": 1.0}
AUG_MIX_TARGET = "--aa rand-m9-mstd0.5 --cutmix 1.0 ≤ 10% over the plain step on a GPU (CPU: reported)"


@pytest.mark.parametrize("where", ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(
    not GPU, reason="needs a CUDA GPU"))])
def test_augment_and_cutmix_cost(bench: Recorder, tmp_path, where) -> None:
    """--aa rand-m9-mstd0.5 --cutmix 1.0 against the plain step. The ≤ 10% target is for the GPU (DALI decodes
    and augments on the device there, the step hides the rest); on the CPU the augmentation is decoder work on
    the same two cores the step uses, so the ratio is reported, not checked."""
    name = f"train_aug_cutmix_{where}"
    overhead, plan, detail = extras_overhead(bench, tmp_path, where, name, AUG_MIX_TARGET,
                                             "the same + --aa rand-m9-mstd0.5 --cutmix 1.0", **AUG_MIX)
    if where == "gpu":
        bench.check(name, plan, metric="augmentation + CutMix overhead", value=overhead, threshold=0.10,
                    passed=overhead <= 0.10, detail=detail)
    print(f"\n{name}: {detail} (target: {AUG_MIX_TARGET})")
