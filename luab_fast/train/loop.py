"""Training of one model: the compiled step, the schedule, checkpoints, resume; ``Trainer.fit`` runs the epochs."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .._cli import DataError
from ..data.targets import BYPRODUCT_KEYS
from ..ops import luab_loss
from . import checkpoint as ckpt
from .config import TrainConfig
from .progress import Progress, StepValues

_KILL_AT_STEP = int(os.environ.get("LUAB_FAST_KILL_AT_STEP", "-1"))  # tests only: SIGKILL after this step


@dataclass
class RunState:
    epoch: int = 0
    batch: int = 0  # next batch of the epoch
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def make_step(model: nn.Module, cfg: TrainConfig, byproducts: bool) -> Callable:
    """loss, parts = step(images, target[, point, point_weight, heat]): the model and the fused loss, the part
    torch.compile sees. With ``byproducts`` (a loader that yields their targets) the point and heat terms join
    the class term; without, the class term alone."""

    def labels_step(images, target):
        logits, _, _ = model(images)
        return luab_loss(logits, target, label_smoothing=cfg.label_smoothing, validate=False)

    def byproducts_step(images, target, point, point_weight, heat):
        logits, point_pred, heat_pred = model(images)
        return luab_loss(logits, target, point_pred, point, point_weight, heat_pred, heat,
                         lambda_point=cfg.lambda_point, lambda_heat=cfg.lambda_heat,
                         label_smoothing=cfg.label_smoothing, validate=False)

    return byproducts_step if byproducts else labels_step


def maybe_compile(step: Callable, cfg: TrainConfig, device: torch.device, say: Callable[[str], None]) -> Callable:
    """The step compiled (``--compile``; auto = on CUDA), falling back to eager, with one message, when
    compilation fails — torch.compile is lazy, so that is decided at the first call."""
    want = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    if not want:
        return step
    try:
        compiled = torch.compile(step, dynamic=False)
    except Exception as exc:  # no compiler toolchain, unsupported platform: eager still trains
        say(f"torch.compile unavailable ({type(exc).__name__}: {exc}); training eagerly")
        return step
    return EagerFallback(compiled, step, say)


class EagerFallback:
    """The compiled step, or the eager one from the first call on if that call fails to compile."""

    def __init__(self, compiled: Callable, eager: Callable, say: Callable[[str], None]) -> None:
        self.step, self.eager, self.say, self.checked = compiled, eager, say, False

    def __call__(self, *args):
        if self.checked:
            return self.step(*args)
        try:
            out = self.step(*args)
        except Exception as exc:  # e.g. inductor without a C++ compiler
            self.say(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); training eagerly")
            self.step = self.eager
            out = self.eager(*args)
        self.checked = True
        return out


class Trainer:
    """Trains ``model`` on ``loader`` per ``cfg``; rank 0 writes ``<out>/<name>/`` (checkpoint, log)."""

    def __init__(self, name: str, model: nn.Module, loader, cfg: TrainConfig, device: torch.device,
                 run_dir: Path, say: Callable[[str], None], rank: int = 0,
                 ddp_model: Optional[nn.Module] = None) -> None:
        self.name, self.model, self.loader, self.cfg, self.device = name, model, loader, cfg, device
        self.dir, self.say, self.rank = run_dir / name, say, rank
        self.dir.mkdir(parents=True, exist_ok=True)
        self.total = cfg.max_steps or cfg.epochs * len(loader)
        # on CUDA the fused kernel: one launch updates every parameter (foreach needs several per group)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     fused=device.type == "cuda")
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(self.total, cfg.warmup_steps))
        # the step takes what the loader yields: the byproduct targets where its store gives them
        self.inputs = ("images", "target", *(BYPRODUCT_KEYS if loader.has_byproducts else ()))
        self.step_fn = maybe_compile(make_step(ddp_model or model, cfg, loader.has_byproducts), cfg, device, say)
        self.state = RunState()
        self.ckpt_path = self.dir / "last.pt"
        if device.type == "cuda" and not cfg.deterministic:
            # fixed shapes (drop_last): cuDNN times its convolution algorithms once per shape and keeps the fastest
            torch.backends.cudnn.benchmark = True
        self.autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else \
            torch.autocast("cpu", enabled=False)

    # -- checkpoints -------------------------------------------------------------------------------------
    def save(self) -> None:
        if self.rank != 0:
            return
        ckpt.save_atomic({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                          "sched": self.sched.state_dict(), "state": vars(self.state), "rng": ckpt.rng_state(),
                          "run": self._identity()}, self.ckpt_path)

    def _identity(self) -> dict[str, Any]:
        """What a resumed run must share with the saved one to continue it (not epochs / max steps: a run may
        be extended; not paths, threads or the decode backend)."""
        keys = ("model", "image_size", "output_stride", "pool", "baseline_pool", "batch_size", "lr", "weight_decay",
                "warmup_steps", "label_smoothing", "lambda_point", "lambda_heat", "heat_sigma", "crop_scale", "seed")
        return {**{k: getattr(self.cfg, k) for k in keys}, "world_size": self.loader.world_size,
                "num_classes": len(self.loader.images.classes), "images": len(self.loader.images)}

    def resume(self, saved: Any = ...) -> bool:
        """Continues from the checkpoint (``saved``: as ``checkpoint.load`` read it, else read here)."""
        if saved is ...:
            saved = ckpt.load(self.ckpt_path)
        if saved is None:
            self.say(f"{self.name}: --resume, but no checkpoint at {self.ckpt_path}: starting from step 0")
            return False
        was, now = saved.get("run", {}), self._identity()
        changed = [f"{k} {was[k]!r} → {now[k]!r}" for k in now if k in was and was[k] != now[k]]
        if changed:
            raise ValueError(f"--resume: {self.ckpt_path} was saved by a run with other settings "
                             f"({'; '.join(changed)}); resume with the same ones or use a new --out")
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError as exc:  # a checkpoint from before settings were saved with it
            raise ValueError(f"--resume: {self.ckpt_path} holds another model: {str(exc).splitlines()[1:2]}; "
                             f"use a new --out") from None
        try:  # the structure was checked at loading; what is inside each part is checked by using it
            self.opt.load_state_dict(saved["opt"])
            self.sched.load_state_dict(saved["sched"])
            state = RunState(**saved["state"])
            ckpt.set_rng_state(saved["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            why = f"it lacks {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else ckpt.describe(exc)
            raise DataError(f"--resume: {self.ckpt_path} is not a usable checkpoint of this trainer (its optimiser, "
                            f"schedule, run state or RNG state does not fit: {why}); use a new --out, or delete it "
                            f"to start over") from None
        self.state = state
        self.say(f"{self.name}: resumed at epoch {self.state.epoch}, batch {self.state.batch}, "
                 f"step {self.state.step}")
        return True

    def done(self) -> bool:
        return self.state.step >= self.total

    # -- training ----------------------------------------------------------------------------------------
    def fit(self, log: Callable[[dict[str, Any]], None], on_epoch_end: Callable[[int], None]) -> None:
        """Trains to ``total`` steps from the run state: a checkpoint every ``checkpoint_every`` steps and at
        each epoch's end, after which ``on_epoch_end(epoch)`` runs (the evaluation)."""
        epochs = math.ceil(self.total / len(self.loader))
        progress = Progress(self.name, self.total, self.state.step, self.state.history, log, show=self.rank == 0)
        while not self.done() and self.state.epoch < epochs:
            epoch_ended = self.train_epoch(progress)
            self.checkpoint(progress)
            if epoch_ended:
                on_epoch_end(self.state.epoch)
        progress.close()

    def train_epoch(self, progress: Progress) -> bool:
        """This epoch's batches from ``state.batch`` on; True when the epoch ran to its end, False when the run
        reached ``total`` steps within it."""
        self.loader.set_epoch(self.state.epoch)
        self.model.train()
        progress.start_epoch()
        for batch in self.loader.iter_from(self.state.batch):
            progress.add(self.train_step(batch), images=batch["images"].shape[0])
            if self.state.step % self.cfg.checkpoint_every == 0:
                self.checkpoint(progress)
            if self.state.step == _KILL_AT_STEP:  # fault injection for the kill-and-resume test
                os.kill(os.getpid(), signal.SIGKILL)
            if self.done():
                return False
        self.state.epoch += 1
        self.state.batch = 0
        return True

    def train_step(self, batch: dict[str, torch.Tensor]) -> StepValues:
        """One optimiser step on ``batch``; its values stay on the device until read (``Progress``)."""
        with self.autocast:  # bf16 on the GPU
            loss, parts = self.step_fn(*[batch[k] for k in self.inputs])
        # numbered like state.step after it (1-based); the learning rate this step used
        values = StepValues(self.state.step + 1, self.state.epoch, self.sched.get_last_lr()[0], loss, parts)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.state.step += 1
        self.state.batch += 1
        return values

    def checkpoint(self, progress: Progress) -> None:
        progress.settle()  # never save a step whose loss has not been read
        self.save()
