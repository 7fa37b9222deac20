"""What a training run reports as it goes: each step's loss on its way to the host (read a step late, NaN
guard), the run's history, the JSON-lines log and the progress bar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .. import _atomic


class NaNLoss(RuntimeError):
    """The loss went NaN or inf; the message names the term (exit status 2: lower --lr, as the message says)."""

    exit_status = 2


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


class Progress:
    """The steps of one ``Trainer.fit``: each step's values are read when the next step has been queued
    (``add``) or before a checkpoint (``settle``), then go to the history, the log and the progress bar, with
    the images per second of the epoch so far."""

    def __init__(self, name: str, total: int, done: int, history: list[dict[str, Any]],
                 log: Callable[[dict[str, Any]], None], show: bool) -> None:
        from tqdm import tqdm

        self.name, self.history, self.log = name, history, log
        self.bar = tqdm(total=total, initial=done, desc=name, unit="step", disable=not show, dynamic_ncols=True,
                        leave=True)
        self.pending: Optional[StepValues] = None
        self.start_epoch()

    def start_epoch(self) -> None:
        """Restarts the epoch's clock (no pending step crosses an epoch: its end is a checkpoint)."""
        self.epoch_start, self.epoch_images = time.perf_counter(), 0

    def add(self, values: StepValues, images: int) -> None:
        """A step just queued: reads the one before it (long done on the GPU by now), keeps this one pending."""
        self.epoch_images += images
        self.settle()
        self.pending = values

    def settle(self) -> None:
        """Reads the pending step's values: NaN check, history, log, progress bar."""
        if self.pending is None:
            return
        done, self.pending = self.pending, None
        values = done.read(self.name)
        img_s = self.epoch_images / (time.perf_counter() - self.epoch_start)
        record = {"model": self.name, "epoch": done.epoch, "step": done.step, **values, "lr": done.lr,
                  "img_s": img_s}
        self.history.append(record)
        self.log(record)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in values.items() if k != "loss"} | {"img/s": f"{img_s:.0f}"})
        self.bar.update(1)

    def close(self) -> None:
        self.settle()
        self.bar.close()


class JsonlLog:
    """A logger appending one JSON line per record. ``fresh``: the first record replaces what the file held
    (an earlier run's log), so a run that fails its checks before logging anything leaves that log alone."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path, self.replace = path, fresh

    def __call__(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        if self.replace:  # the earlier log is replaced whole, by a complete file, never truncated first
            _atomic.write_text(self.path, line)
        else:
            with open(self.path, "a") as f:
                f.write(line)
        self.replace = False
