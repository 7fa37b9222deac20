"""The optimiser step's machinery, from timm's factories: the optimiser (``create_optimizer_v2``), the schedule
(``create_scheduler_v2``, stepped per optimiser update as timm's train.py steps it), the weight EMA
(``ModelEmaV3``), gradient clipping (``dispatch_clip_grad``) and the autocast dtype with its GradScaler.

Nothing here reads a value back from the device: the loop stays free of host syncs (the one exception is
PyTorch's: a GradScaler stepping an optimiser that cannot take the scale itself, see ``Amp``)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
from torch import nn

from .config import TrainConfig

DEFAULT_WARMUP_STEPS = 20  # the trainer's warm-up before timm's schedules; kept for the demo's short runs
DEFAULT_MILESTONES = (90.0, 180.0, 270.0)  # timm's create_scheduler_v2 default


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """``--opt`` by timm name. Weight decay skips 1-d parameters (norms, biases) and the model's
    ``no_weight_decay()`` names (``filter_bias_and_bn``); ``--layer-decay`` scales each layer's lr by the
    model's ``group_matcher``. On CUDA the fused kernel where the optimiser has one (one launch for every
    parameter), else timm's default (foreach)."""
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if cfg.opt_eps is not None:
        kwargs["eps"] = cfg.opt_eps
    if cfg.opt_betas is not None:
        kwargs["betas"] = tuple(cfg.opt_betas)
    if device.type == "cuda" and cfg.opt.lower() in FUSED:
        kwargs["fused"] = True
    return create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               momentum=cfg.momentum, layer_decay=cfg.layer_decay, filter_bias_and_bn=True,
                               **kwargs)


# timm names that resolve to torch.optim.{SGD, Adam, AdamW}, which have a fused CUDA kernel (``fused=True``)
FUSED = {"sgd", "nesterov", "momentum", "adam", "adamw"}


@dataclass(frozen=True)
class Schedule:
    """The schedule's lengths in optimiser steps: ``steps_per_epoch`` (batches / accumulation, rounded up as
    timm's train.py rounds), ``total`` (what the run trains: --max-steps, else (epochs + cooldown) epochs)
    and ``length`` (what the schedule spans, ``total`` less the cool-down)."""

    steps_per_epoch: int
    total: int
    length: int


def schedule_lengths(cfg: TrainConfig, batches_per_epoch: int) -> Schedule:
    spe = math.ceil(batches_per_epoch / cfg.grad_accum_steps)
    cooldown = round(cfg.cooldown_epochs * spe)
    total = cfg.max_steps or cfg.epochs * spe + cooldown
    return Schedule(spe, total, max(1, total - cooldown))


def warmup_steps(cfg: TrainConfig, spe: int) -> float:
    """The warm-up in optimiser steps: --warmup-steps, else --warmup-epochs × steps per epoch (as timm
    multiplies it), else 20 steps when neither is given."""
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    if cfg.warmup_epochs > 0:
        return cfg.warmup_epochs * spe
    return DEFAULT_WARMUP_STEPS


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, lengths: Schedule):
    """``--sched`` by timm name. Every schedule but plateau counts optimiser steps (timm's
    ``step_on_epochs=False``): the epochs of the options are multiplied by the steps per epoch here, exactly as
    ``create_scheduler_v2`` multiplies them by ``updates_per_epoch``, and the length is the run's steps (so
    --max-steps ends the decay at --min-lr). Plateau steps per epoch on the evaluation metric (timm's too)."""
    from timm.scheduler import create_scheduler_v2

    spe = lengths.steps_per_epoch
    common = dict(sched=cfg.sched, decay_rate=cfg.decay_rate, min_lr=cfg.min_lr, warmup_lr=cfg.warmup_lr)
    if cfg.sched == "plateau":
        sched, _ = create_scheduler_v2(opt, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                       plateau_mode="max", step_on_epochs=True, **common)
        return sched
    milestones = cfg.decay_milestones if cfg.decay_milestones is not None else DEFAULT_MILESTONES
    sched, _ = create_scheduler_v2(opt, num_epochs=lengths.length, warmup_epochs=warmup_steps(cfg, spe),
                                   decay_epochs=cfg.decay_epochs * spe, decay_milestones=[m * spe for m in milestones],
                                   step_on_epochs=False, updates_per_epoch=1, **common)
    return sched


def current_lr(opt: torch.optim.Optimizer) -> float:
    """The schedule's learning rate: the largest group's (with --layer-decay the top layer's scale is 1)."""
    return max(float(g["lr"]) for g in opt.param_groups)


def build_ema(model: nn.Module, cfg: TrainConfig):
    """timm's ``ModelEmaV3`` of ``model`` (a copy, updated after every optimiser step), or None."""
    if not cfg.model_ema:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=cfg.model_ema_decay, use_warmup=cfg.model_ema_warmup)


def clip_gradients(params: Iterable[torch.Tensor], cfg: TrainConfig) -> None:
    """``--clip-grad`` in ``--clip-mode`` (timm's ``dispatch_clip_grad``: global norm, value, or AGC). The norm
    is clipped on the device (no ``error_if_nonfinite`` read-back)."""
    from timm.utils import dispatch_clip_grad

    dispatch_clip_grad(list(params), cfg.clip_grad, mode=cfg.clip_mode)


class Amp:
    """``--amp-dtype``: the autocast context and a ``torch.amp.GradScaler`` (enabled for float16 only; a disabled
    scaler passes the loss and the step through unchanged). Default bfloat16 on CUDA, float32 (no autocast)
    on the CPU. A float16 scaler checks for infs on the host at each step unless the optimiser takes the scale
    itself (PyTorch's fused Adam, AdamW, SGD): the one per-step sync this trainer can have, and only there."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        name = cfg.amp_dtype or ("bfloat16" if device.type == "cuda" else "float32")
        self.dtype = getattr(torch, name)
        enabled = self.dtype != torch.float32
        self.context = (torch.autocast(device.type, self.dtype) if enabled else
                        torch.autocast(device.type, enabled=False))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.context


def no_sync(ddp: Optional[nn.Module], inner: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync()`` on the inner batches of an accumulated step: gradients are all-reduced once, on the
    last batch's backward."""
    return ddp.no_sync() if ddp is not None and inner else contextlib.nullcontext()
