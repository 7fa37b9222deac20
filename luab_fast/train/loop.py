"""Training and evaluation of one model: the compiled step, the schedule, checkpoints, resume, NaN guard."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from .. import _atomic
from .._cli import DataError
from ..ops import luab_loss
from . import checkpoint as ckpt
from .config import TrainConfig

_KILL_AT_STEP = int(os.environ.get("LUAB_FAST_KILL_AT_STEP", "-1"))  # tests only: SIGKILL after this step


class NaNLoss(RuntimeError):
    """The loss went NaN or inf; the message names the term (exit status 2: lower --lr, as the message says)."""

    exit_status = 2


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
    """loss, parts = step(batch): the model and the fused loss, the part torch.compile sees."""
    lp, lh = (cfg.lambda_point, cfg.lambda_heat) if byproducts else (0.0, 0.0)

    def step(images, target, point, weight, heat):
        logits, point_pred, heat_pred = model(images)
        if not byproducts:
            point_pred = point = weight = heat_pred = heat = None
        return luab_loss(logits, target, point_pred, point, weight, heat_pred, heat, lambda_point=lp,
                         lambda_heat=lh, label_smoothing=cfg.label_smoothing, check_finite=False)

    return step


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
    state = {"fn": compiled, "checked": False}

    def run(*args):
        if state["checked"]:
            return state["fn"](*args)
        try:
            out = state["fn"](*args)
        except Exception as exc:  # e.g. inductor without a C++ compiler
            say(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); training eagerly")
            state["fn"] = step
            out = step(*args)
        state["checked"] = True
        return out

    return run


def _target(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["soft_labels"] if "soft_labels" in batch else batch["labels"]


class StepValues:
    """One step's loss and loss parts (averaged over ranks under DDP) on their way to the host. On a GPU the
    copy is queued behind the step (pinned memory, an event) and read a step later, so the loop never waits for
    the GPU: the CPU decodes the next batch while the GPU trains on this one. A NaN is therefore seen one step
    late; nothing is saved before the values of every step up to the save were read, so the checkpoint on disk
    is always a good one."""

    def __init__(self, step: int, epoch: int, lr: float, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        self.step, self.epoch, self.lr, self.names = step, epoch, lr, ["loss", *parts]
        values = torch.stack([loss.detach().float(), *(v.detach().float() for v in parts.values())])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # the mean over ranks (queued like the step on NCCL): what rank 0 logs is the global loss, and a
            # NaN on any rank stops every rank at the same step instead of leaving the others in a collective
            torch.distributed.all_reduce(values)
            values /= torch.distributed.get_world_size()
        self.event = None
        if values.is_cuda:
            self.host = torch.empty(values.shape, dtype=torch.float32, pin_memory=True)
            self.host.copy_(values, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = values

    def read(self, where: str) -> dict[str, float]:
        """The values (waiting for the step on a GPU); raises NaNLoss naming the non-finite term(s)."""
        if self.event is not None:
            self.event.synchronize()
        values = dict(zip(self.names, self.host.tolist()))
        if not math.isfinite(values["loss"]):
            bad = [k for k, v in values.items() if k != "loss" and not math.isfinite(v)] or ["loss"]
            raise NaNLoss(f"{where} step {self.step}: the {', '.join(bad)} term went {values['loss']}; stopped, the "
                          f"last good checkpoint is kept (lower --lr, or check the inputs of that term)")
        return values


class Trainer:
    """Trains ``model`` on ``loader`` per ``cfg``; rank 0 writes ``<out>/<name>/`` (checkpoint, log)."""

    def __init__(self, name: str, model: nn.Module, loader, cfg: TrainConfig, device: torch.device,
                 byproducts: bool, run_dir: Path, say: Callable[[str], None], rank: int = 0,
                 ddp_model: Optional[nn.Module] = None) -> None:
        self.name, self.model, self.loader, self.cfg, self.device = name, model, loader, cfg, device
        self.byproducts, self.dir, self.say, self.rank = byproducts, run_dir / name, say, rank
        self.dir.mkdir(parents=True, exist_ok=True)
        train_model = ddp_model or model
        self.total = cfg.max_steps or cfg.epochs * len(loader)
        # on CUDA the fused kernel: one launch updates every parameter (foreach needs several per group)
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     fused=device.type == "cuda")
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(self.total, cfg.warmup_steps))
        self.step_fn = maybe_compile(make_step(train_model, cfg, byproducts), cfg, device, say)
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
        from tqdm import tqdm

        cfg = self.cfg
        n_epochs = math.ceil(self.total / len(self.loader))
        bar = tqdm(total=self.total, initial=self.state.step, desc=self.name, unit="step",
                   disable=self.rank != 0, dynamic_ncols=True, leave=True)
        pending: Optional[StepValues] = None
        t0, seen = time.perf_counter(), 0  # this epoch's clock (restarted each epoch: no pending step crosses one)

        def settle() -> None:
            """Reads the previous step's values: NaN check, history, log, progress bar."""
            nonlocal pending
            if pending is None:
                return
            done, pending = pending, None
            values = done.read(self.name)
            img_s = seen / (time.perf_counter() - t0)
            record = {"model": self.name, "epoch": done.epoch, "step": done.step, **values, "lr": done.lr,
                      "img_s": img_s}
            self.state.history.append(record)
            log(record)
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items() if k != "loss"} | {"img/s": f"{img_s:.0f}"})
            bar.update(1)

        def save() -> None:
            settle()  # never save a step whose loss has not been read
            self.save()

        while not self.done() and self.state.epoch < n_epochs:
            self.loader.set_epoch(self.state.epoch)
            self.model.train()
            t0, seen = time.perf_counter(), 0
            for batch in self.loader.iter_from(self.state.batch):
                with self.autocast:  # bf16 on the GPU
                    loss, parts = self.step_fn(batch["images"], _target(batch), batch.get("point"),
                                               batch.get("point_weight"), batch.get("heat"))
                # numbered like state.step after it (1-based); the learning rate this step used
                current = StepValues(self.state.step + 1, self.state.epoch, self.sched.get_last_lr()[0], loss, parts)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.sched.step()
                self.state.step += 1
                self.state.batch += 1
                seen += batch["images"].shape[0]
                settle()  # the step before this one: long done on the GPU by now
                pending = current
                if self.state.step % cfg.checkpoint_every == 0:
                    save()
                if self.state.step == _KILL_AT_STEP:  # fault injection for the kill-and-resume test
                    os.kill(os.getpid(), signal.SIGKILL)
                if self.done():
                    break
            else:  # the epoch ran to its end
                self.state.epoch += 1
                self.state.batch = 0
                save()
                on_epoch_end(self.state.epoch)
                continue
            save()
        settle()
        bar.close()


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, boxes: Optional[dict[str, np.ndarray]] = None
             ) -> dict[str, Any]:
    """top-1, top-5, per-class accuracy; with ``boxes`` (stem → [n, 4] or [4] (x0, y0, x1, y1) normalised to
    the original image) also the pointing accuracy (1 − localisation error) of the predicted heat-map peak and
    point: the share of the boxed images whose peak / point falls inside one of their boxes."""
    model.eval()
    correct1 = correct5 = total = 0
    per_class = np.zeros((num_classes, 2), np.int64)
    hits_heat = hits_point = n_boxed = 0
    stems = loader.images.stems
    for batch in loader:
        logits, point, heat = model(batch["images"])
        labels = batch["labels"]
        top5 = logits.topk(min(5, num_classes), 1).indices
        correct1 += int((top5[:, 0] == labels).sum())
        correct5 += int((top5 == labels[:, None]).any(1).sum())
        total += len(labels)
        np.add.at(per_class, (labels.cpu().numpy(), 0), (top5[:, 0] == labels).cpu().numpy().astype(np.int64))
        np.add.at(per_class, (labels.cpu().numpy(), 1), 1)
        if boxes:
            h, w = heat.shape[-2:]
            peak = heat.flatten(1).argmax(1)
            heat_xy = torch.stack([(peak % w + 0.5) / w, (peak // w + 0.5) / h], 1)
            for name, xy in (("heat", heat_xy), ("point", point)):
                img_xy = _crop_to_image(xy, batch["boxes"], batch["flips"]).cpu().numpy()
                for r, (x, y) in zip(batch["rows"].tolist(), img_xy):
                    b = boxes.get(stems[r])
                    if b is None:
                        continue
                    b = np.atleast_2d(b)  # an image may have several boxes: inside any counts
                    inside = bool(((b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3])).any())
                    if name == "heat":
                        hits_heat += inside
                        n_boxed += 1
                    else:
                        hits_point += inside
    out = {"top1": correct1 / max(total, 1), "top5": correct5 / max(total, 1), "images": total,
           "per_class": (per_class[:, 0] / np.maximum(per_class[:, 1], 1)).round(4).tolist()}
    if n_boxed:
        out["pointing_heat"] = hits_heat / n_boxed
        out["pointing_point"] = hits_point / n_boxed
        out["boxed_images"] = n_boxed
    return out


def _crop_to_image(xy: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    x = torch.where(flips, 1 - xy[:, 0], xy[:, 0])
    return torch.stack([boxes[:, 0] + x * (boxes[:, 2] - boxes[:, 0]),
                        boxes[:, 1] + xy[:, 1] * (boxes[:, 3] - boxes[:, 1])], 1)


def append_jsonl(path: Path, fresh: bool = False) -> Callable[[dict[str, Any]], None]:
    """A logger appending one JSON line per record. ``fresh``: the first record replaces what the file held
    (an earlier run's log), so a run that fails its checks before logging anything leaves that log alone."""
    mode = ["w" if fresh else "a"]

    def log(record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        if mode[0] == "w":  # the earlier log is replaced whole, by a complete file, never truncated first
            _atomic.write_text(path, line)
        else:
            with open(path, "a") as f:
                f.write(line)
        mode[0] = "a"
    return log
