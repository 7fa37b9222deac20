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
from . import optim
from .config import TrainConfig
from .progress import Progress, StepValues

_KILL_AT_STEP = int(os.environ.get("LUAB_FAST_KILL_AT_STEP", "-1"))  # tests only: SIGKILL after this step


@dataclass
class RunState:
    epoch: int = 0
    batch: int = 0  # next batch of the epoch
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    kept: list[list[float]] = field(default_factory=list)  # --checkpoint-hist: [metric, epoch], best first


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
        self.ddp = ddp_model
        self.lengths = optim.schedule_lengths(cfg, len(loader))
        self.total = self.lengths.total
        self.opt = optim.build_optimizer(model, cfg, device)
        self.sched = optim.build_scheduler(self.opt, cfg, self.lengths)
        self.ema = optim.build_ema(model, cfg)
        self.amp = optim.Amp(cfg, device)
        # the step takes what the loader yields: the byproduct targets where its store gives them
        self.inputs = ("images", "target", *(BYPRODUCT_KEYS if loader.has_byproducts else ()))
        self.step_fn = maybe_compile(make_step(ddp_model or model, cfg, loader.has_byproducts), cfg, device, say)
        self.state = RunState()
        self.ckpt_path = self.dir / "last.pt"
        self._sum: Optional[list[torch.Tensor]] = None  # loss and parts summed over an accumulated step's batches
        self._names: list[str] = []  # the loss parts' names
        if device.type == "cuda" and not cfg.deterministic:
            # fixed shapes (drop_last): cuDNN times its convolution algorithms once per shape and keeps the fastest
            torch.backends.cudnn.benchmark = True

    # -- checkpoints -------------------------------------------------------------------------------------
    def save(self) -> None:
        if self.rank != 0:
            return
        saved = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                 "scaler": self.amp.scaler.state_dict(), "state": vars(self.state), "rng": ckpt.rng_state(),
                 "run": self._identity(), "trainer": self.name, "classes": list(self.loader.images.classes)}
        if self.ema is not None:
            saved["ema"] = self.ema.module.state_dict()
        ckpt.save_atomic(saved, self.ckpt_path)

    def keep_best(self, metric: Optional[float]) -> None:
        """--checkpoint-hist N: after an epoch's evaluation, last.pt (just saved with this epoch's weights) is
        copied to ``checkpoint-<epoch>.pt`` when it ranks among the best N by ``metric``, and to
        ``model_best.pt`` when it is the best; the one that drops out of the N is deleted. timm's CheckpointSaver
        does this, but it writes its own checkpoint format with plain torch.save (a kill tears the file) and
        needs timm's argparse namespace: ours copies this trainer's atomic last.pt, atomically (_atomic). The
        ranking lives in the run state, so a resumed run continues it."""
        n = self.cfg.checkpoint_hist
        if not n or self.rank != 0 or metric is None:
            return
        epoch = self.state.epoch
        kept = sorted([*self.state.kept, [float(metric), epoch]], key=lambda me: (-me[0], me[1]))  # ties: earlier
        if [float(metric), epoch] not in kept[:n]:
            return
        dropped, self.state.kept = kept[n:], kept[:n]
        self.save()  # last.pt with the ranking in its run state, then its copies
        ckpt.copy_atomic(self.ckpt_path, self.dir / f"checkpoint-{epoch}.pt")
        if self.state.kept[0][1] == epoch:
            ckpt.copy_atomic(self.ckpt_path, self.dir / "model_best.pt")
        for _, e in dropped:
            (self.dir / f"checkpoint-{int(e)}.pt").unlink(missing_ok=True)
        self.say(f"{self.name}: epoch {epoch} {self.cfg.eval_metric} {metric:.4f} kept as checkpoint-{epoch}.pt "
                 f"(best: epoch {int(self.state.kept[0][1])}, {self.state.kept[0][0]:.4f})")

    def _identity(self) -> dict[str, Any]:
        """What a resumed run must share with the saved one to continue it (not epochs / max steps: a run may
        be extended; not paths, threads or the decode backend)."""
        keys = ("model", "image_size", "output_stride", "pool", "baseline_pool", "batch_size", "lr", "weight_decay",
                "warmup_steps", "label_smoothing", "lambda_point", "lambda_heat", "heat_sigma", "crop_scale", "seed",
                *RUN_KEYS)
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
            if "scaler" in saved:
                self.amp.scaler.load_state_dict(saved["scaler"])
            if self.ema is not None:
                self.ema.module.load_state_dict(saved["ema"])
            state = RunState(**saved["state"])
            ckpt.set_rng_state(saved["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            why = f"it lacks {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else ckpt.describe(exc)
            raise DataError(f"--resume: {self.ckpt_path} is not a usable checkpoint of this trainer (its optimiser, "
                            f"schedule, run state or RNG state does not fit: {why}); use a new --out, or delete it "
                            f"to start over") from None
        self.state = state
        self.sched.step_update(self.state.step)  # the learning rate of the next step (plateau: as it was saved)
        self.say(f"{self.name}: resumed at epoch {self.state.epoch}, batch {self.state.batch}, "
                 f"step {self.state.step}")
        return True

    def done(self) -> bool:
        return self.state.step >= self.total

    # -- training ----------------------------------------------------------------------------------------
    def fit(self, log: Callable[[dict[str, Any]], None],
            on_epoch_end: Callable[[int], Optional[dict[str, float]]]) -> None:
        """Trains to ``total`` steps from the run state: a checkpoint every ``checkpoint_every`` steps and at
        each epoch's end, after which ``on_epoch_end(epoch)`` runs (the evaluation; what it returns, the
        first split's metrics, gives the top-1 --sched plateau steps on and the --eval-metric of
        --checkpoint-hist)."""
        epochs = math.ceil(self.total / self.lengths.steps_per_epoch)
        progress = Progress(self.name, self.total, self.state.step, self.state.history, log, show=self.rank == 0)
        while not self.done() and self.state.epoch < epochs:
            epoch_ended = self.train_epoch(progress)
            self.checkpoint(progress)
            if epoch_ended:
                metrics = on_epoch_end(self.state.epoch)
                metric = metrics["top1"] if metrics else None
                # timm's train.py: the schedule's epoch step (only plateau's does anything), then a save, so a
                # resumed run continues with the plateau's state after this epoch
                self.sched.step(self.state.epoch, _on_every_rank(metric, self.device))
                if self.cfg.sched == "plateau":
                    self.save()
                self.keep_best(metrics[self.cfg.eval_metric] if metrics else None)
        progress.close()

    def train_epoch(self, progress: Progress) -> bool:
        """This epoch's batches from ``state.batch`` on; True when the epoch ran to its end, False when the run
        reached ``total`` steps within it. Every ``--grad-accum-steps`` batches make one optimiser step (the
        epoch's last step takes what is left, as timm's train.py)."""
        self.loader.set_epoch(self.state.epoch)
        self.model.train()
        progress.start_epoch()
        n, accum = len(self.loader), self.cfg.grad_accum_steps
        images = 0
        for batch in self.loader.iter_from(self.state.batch):
            first = self.state.batch - self.state.batch % accum
            group = min(accum, n - first)  # batches in this optimiser step
            last = self.state.batch == first + group - 1
            self.backward(batch, group, last)
            images += batch["images"].shape[0]
            if not last:
                continue
            progress.add(self.optimizer_step(), images=images)
            images = 0
            if self.state.step % self.cfg.checkpoint_every == 0:
                self.checkpoint(progress)
            if self.state.step == _KILL_AT_STEP:  # fault injection for the kill-and-resume test
                os.kill(os.getpid(), signal.SIGKILL)
            if self.done() and self.state.batch < n:  # the run ends within the epoch; at its last batch the
                return False                           # epoch ends as any other (evaluated, ranked)
        self.state.epoch += 1
        self.state.batch = 0
        return True

    def backward(self, batch: dict[str, torch.Tensor], group: int, last: bool) -> None:
        """Forward and backward of one batch of an optimiser step of ``group`` batches (its loss / group, so
        the gradients add up to the mean's); DDP all-reduces on the ``last`` only."""
        with optim.no_sync(self.ddp, inner=not last):
            with self.amp.autocast():  # bf16 on the GPU by default
                loss, parts = self.step_fn(*[batch[k] for k in self.inputs])
            self.amp.scaler.scale(loss / group if group > 1 else loss).backward()
        values = [loss.detach(), *(v.detach() for v in parts.values())]
        if group > 1:
            values = [v / group for v in values]
        self._sum = values if self._sum is None else [a + b for a, b in zip(self._sum, values)]
        self._names = list(parts)
        self.state.batch += 1

    def optimizer_step(self) -> StepValues:
        """Clipping, the optimiser step, the schedule and the EMA after the batches' backward; the values (mean
        loss and parts of the step's batches) stay on the device until read (``Progress``)."""
        loss, *parts = self._sum
        self._sum = None
        # numbered like state.step after it (1-based); the learning rate this step used
        values = StepValues(self.state.step + 1, self.state.epoch, optim.current_lr(self.opt), loss,
                            dict(zip(self._names, parts)))
        if self.cfg.clip_grad is not None:
            self.amp.scaler.unscale_(self.opt)  # clip the true gradients, not the float16-scaled ones
            optim.clip_gradients(self.model.parameters(), self.cfg)
        self.amp.scaler.step(self.opt)
        self.amp.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.state.step += 1
        self.sched.step_update(self.state.step)  # the learning rate of the next step (timm's num_updates)
        if self.ema is not None:
            self.ema.update(self.model, step=self.state.step)
        return values

    def checkpoint(self, progress: Progress) -> None:
        progress.settle()  # never save a step whose loss has not been read
        self.save()


# the settings of the optimiser step that a resumed run must share (beside the older ones in Trainer._identity)
RUN_KEYS = ("drop", "drop_path", "model_kwargs", "opt", "momentum", "opt_eps", "opt_betas", "layer_decay", "sched",
            "warmup_epochs", "warmup_lr", "min_lr", "cooldown_epochs", "decay_epochs", "decay_milestones",
            "decay_rate", "model_ema", "model_ema_decay", "model_ema_warmup", "clip_grad", "clip_mode",
            "grad_accum_steps", "amp_dtype", "mixup", "cutmix", "cutmix_minmax", "mixup_prob", "mixup_switch_prob",
            "mixup_mode", "mixup_off_epoch", "cutmix_relabel", "aa", "reprob", "remode", "recount", "color_jitter",
            "ratio", "interpolation")


def _on_every_rank(metric: Optional[float], device: torch.device) -> Optional[float]:
    """Rank 0's evaluation metric on every rank (only rank 0 evaluates): the plateau schedule must decide alike
    everywhere. One broadcast per epoch."""
    if metric is None and not torch.distributed.is_initialized():
        return None
    if not torch.distributed.is_initialized():
        return metric
    t = torch.tensor([math.nan if metric is None else metric], dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, 0)
    return None if math.isnan(t.item()) else t.item()
