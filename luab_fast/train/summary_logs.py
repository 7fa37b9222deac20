"""The logs people already read, beside log.jsonl (issue 20): timm's per-epoch ``summary.csv`` in each model's
run folder, TensorBoard event files (``--log-tensorboard``, under ``<out>/<model>/tb/``) and Weights & Biases
(``--log-wandb``). TensorBoard and wandb are optional: a flag whose package is not importable is refused before
anything is set up, naming the package to install. Every value logged here is one the trainer has already read
back to the host (``Progress``'s one-step-late readback, the evaluation's Python numbers): no sync is added."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Callable

from .. import _atomic
from .._cli import UsageError

SUMMARY = "summary.csv"
_STEP_KEYS = ("model", "epoch", "step", "img_s")  # step records' bookkeeping, not scalars to plot


def _import_summary_writer():
    from torch.utils.tensorboard import SummaryWriter  # imports the tensorboard package

    return SummaryWriter


def _import_wandb():
    import wandb

    return wandb


def require(cfg) -> None:
    """--log-tensorboard / --log-wandb without their package: a UsageError naming it (before the run starts)."""
    if getattr(cfg, "log_tensorboard", False):
        try:
            _import_summary_writer()
        except ImportError as exc:
            raise UsageError(f"--log-tensorboard needs the tensorboard package, which is not importable ({exc}); "
                             f"install it (pip install tensorboard, or pip install luab_fast[logging]) or leave "
                             f"the flag out") from None
    if getattr(cfg, "log_wandb", False):
        try:
            _import_wandb()
        except ImportError as exc:
            raise UsageError(f"--log-wandb needs the wandb package, which is not importable ({exc}); install it "
                             f"(pip install wandb, or pip install luab_fast[logging]) or leave the flag out") from None


def epoch_row(epoch: int, history: list[dict[str, Any]], splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One summary.csv row in timm's columns (``timm.utils.update_summary``: epoch, train_*, eval_*, lr): the
    mean loss of the epoch's steps, the first split's metrics as eval_* (eval_loss: the mean cross-entropy
    against its labels), the other splits' as ``<split>_top1``/``<split>_top5``, and the learning rate of the
    epoch's last step. ``epoch`` counts epochs done (1-based), as log.jsonl's evaluation records."""
    steps = [r for r in history if r.get("epoch") == epoch - 1 and "loss" in r]
    row: dict[str, Any] = {"epoch": epoch,
                           "train_loss": sum(r["loss"] for r in steps) / len(steps) if steps else ""}
    for i, (split, scores) in enumerate(splits.items()):
        prefix = "eval" if i == 0 else split
        if i == 0:
            row["eval_loss"] = scores.get("loss", "")
        row[f"{prefix}_top1"] = scores["top1"]
        row[f"{prefix}_top5"] = scores["top5"]
    row["lr"] = steps[-1]["lr"] if steps else ""
    return row


class SummaryCsv:
    """``<out>/<model>/summary.csv``, one row per epoch. timm's ``update_summary`` appends in place (a kill
    mid-write leaves a torn row, a header written once fixes the columns, a resumed run that reaches an epoch
    again adds a second row for it), so the file is rewritten whole and atomically at each epoch instead: the
    rows of earlier epochs (``fresh``: none of an earlier run's), then this one, which replaces any row of the
    same or a later epoch."""

    def __init__(self, path: Path, fresh: bool) -> None:
        self.path, self.fresh = path, fresh

    def _rows(self) -> list[dict[str, str]]:
        if self.fresh or not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def write(self, row: dict[str, Any]) -> None:
        rows: list[dict[str, Any]] = [r for r in self._rows() if _epoch(r) < row["epoch"]] + [row]
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic.write_text(self.path, out.getvalue())
        self.fresh = False


def _epoch(row: dict[str, str]) -> float:
    try:
        return int(row.get("epoch", ""))
    except ValueError:
        return math.inf  # a row that is not ours: dropped


class RunLogs:
    """One trained model's summary.csv, and its TensorBoard writer / wandb run where asked for (rank 0 only).
    ``step(record)`` takes log.jsonl's step records, ``epoch(...)`` the evaluation after each epoch."""

    def __init__(self, cfg, name: str, run_dir: Path, fresh: bool) -> None:
        self.name = name
        model_dir = run_dir / name
        self.summary = SummaryCsv(model_dir / SUMMARY, fresh)
        self.tb = None
        self.wandb = None
        if getattr(cfg, "log_tensorboard", False):
            self.tb = _import_summary_writer()(log_dir=str(model_dir / "tb"))
        if getattr(cfg, "log_wandb", False):
            wandb = _import_wandb()
            self.wandb = wandb.init(project=cfg.wandb_project, dir=str(run_dir), name=f"{run_dir.name}/{name}",
                                    group=run_dir.name, mode=os.environ.get("WANDB_MODE") or None,
                                    config={**vars(cfg), "trained_model": name}, reinit=True)

    def wrap(self, log: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        """``log`` (log.jsonl) that also sends the step records' scalars to TensorBoard / wandb."""
        if self.tb is None and self.wandb is None:
            return log

        def both(record: dict[str, Any]) -> None:
            log(record)
            if "loss" in record:
                self.step(record)
        return both

    def step(self, record: dict[str, Any]) -> None:
        scalars = {f"train/{k}": v for k, v in record.items() if k not in _STEP_KEYS and k != "lr"}
        scalars["train/lr"] = record["lr"]
        self._scalars(scalars, record["step"])

    def epoch(self, epoch: int, step: int, history: list[dict[str, Any]], splits: dict[str, dict[str, Any]]) -> None:
        row = epoch_row(epoch, history, splits)
        self.summary.write(row)
        scalars = {f"eval/{split}_{k}": float(scores[k]) for split, scores in splits.items() for k in ("top1", "top5")}
        if row["train_loss"] != "":
            scalars["epoch/train_loss"] = row["train_loss"]
        scalars["epoch/epoch"] = epoch
        self._scalars(scalars, step)

    def _scalars(self, scalars: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, float(v), step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class NoLogs(RunLogs):
    """Ranks other than 0: nothing written."""

    def __init__(self) -> None:  # noqa: D107
        self.tb = self.wandb = None

    def epoch(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


def open_logs(cfg, name: str, run_dir: Path, rank: int) -> RunLogs:
    return RunLogs(cfg, name, run_dir, fresh=not cfg.resume) if rank == 0 else NoLogs()


__all__ = ["SUMMARY", "RunLogs", "SummaryCsv", "epoch_row", "open_logs", "require"]
