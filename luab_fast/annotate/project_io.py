"""Reading the labels that came back from a labelling round, for ``python -m luab_fast.annotate next``.

Three layouts, told apart by their header (or named with ``fmt``):

* plain CSV: ``task,worker,label`` (``item`` is taken for ``task``);
* Amazon Mechanical Turk batch results (the requester site's "Download CSV"): one row per assignment, ``WorkerId``,
  ``AssignmentStatus`` (Submitted / Approved / Rejected), the HIT's fields as ``Input.<name>`` and the worker's as
  ``Answer.<name>`` (docs.aws.amazon.com/AWSMechTurk, "Retrieving results");
* Toloka results TSV (the pool's "Download results"): ``INPUT:<field>``, ``OUTPUT:<field>``, ``GOLDEN:<field>``,
  ``ASSIGNMENT:worker_id``, ``ASSIGNMENT:status`` (SUBMITTED / APPROVED / REJECTED) (toloka.ai docs, "Receiving
  responses").

In the platform layouts the task is the one ``Input.``/``INPUT:`` column and the label the one ``Answer.``/``OUTPUT:``
column; with several, ``task_column`` / ``label_column`` name them (as do ``--task-column`` etc.). Rejected
assignments are skipped and counted. Every value is read as text: ids like ``007`` keep their zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from .._cli import DataError, UsageError
from .._digest import file_sha256 as digest  # the name the project code keys files by

FORMATS = ("auto", "csv", "mturk", "toloka")
_LAYOUT = {  # format: (worker column, status column, task prefix, label prefix, rejected status)
    "mturk": ("WorkerId", "AssignmentStatus", "Input.", "Answer.", "rejected"),
    "toloka": ("ASSIGNMENT:worker_id", "ASSIGNMENT:status", "INPUT:", "OUTPUT:", "rejected"),
}


@dataclass
class Answers:
    """Rows of one export as text columns ``task, worker, label`` (file order), and what was skipped."""

    path: Path
    fmt: str
    digest: str  # sha256 of the file's bytes: the same file given twice is recognised
    rows: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows


def _sniff(header: list[str]) -> str:
    if "ASSIGNMENT:worker_id" in header:
        return "toloka"
    if "WorkerId" in header and any(c.startswith("Answer.") for c in header):
        return "mturk"
    return "csv"


def _pick(header: list[str], given: Optional[str], prefix: Optional[str], default: Optional[str], what: str,
          option: str, path: Path) -> str:
    """The column holding ``what``: the one the user named, else the default name, else the one ``prefix`` column."""
    if given is not None:
        if given not in header:
            raise DataError(f"{path}: {option} {given!r} is not a column; the header has {', '.join(header[:12])}"
                            + (" ..." if len(header) > 12 else ""))
        return given
    if default is not None and default in header:
        return default
    cands = [c for c in header if prefix and c.startswith(prefix)]
    if len(cands) == 1:
        return cands[0]
    expected = f"a {default!r} column" if prefix is None else f"one {prefix}<name> column"
    got = f"{len(cands)}: {', '.join(cands[:6])}" if cands else f"none (header: {', '.join(header[:12])})"
    raise DataError(f"{path}: cannot tell which column holds the {what}: expected {expected}, got {got}; name it "
                    f"with {option}")


def read_answers(path: str | Path, fmt: str = "auto", task_column: Optional[str] = None,
                 worker_column: Optional[str] = None, label_column: Optional[str] = None) -> Answers:
    """One export as ``Answers``; DataError naming the file when it cannot be read or lacks a needed column."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--labels {p}: {'a folder' if p.is_dir() else 'no such file'}; expected a CSV/TSV export")
    try:
        with open(p, encoding="utf-8-sig") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise DataError(f"--labels {p}: not UTF-8 text; expected a CSV/TSV export") from None
    sep = "\t" if (p.suffix.lower() == ".tsv" or first.count("\t") > first.count(",")) else ","
    try:
        df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"--labels {p}: empty file; expected a header and rows of answers") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"--labels {p}: not a readable {'TSV' if sep == chr(9) else 'CSV'} table "
                        f"({str(e).strip()[:200]})") from None
    header = [str(c) for c in df.columns]
    kind = _sniff(header) if fmt == "auto" else fmt
    skipped: dict[str, int] = {}
    if kind == "csv":
        task = _pick(header, task_column, None, "item" if "item" in header and "task" not in header else "task",
                     "task ids", "--task-column", p)
        worker = _pick(header, worker_column, None, "worker", "worker ids", "--worker-column", p)
        label = _pick(header, label_column, None, "label", "labels", "--label-column", p)
    else:
        wcol, scol, tpre, lpre, rejected = _LAYOUT[kind]
        task = _pick(header, task_column, tpre, None, "task ids", "--task-column", p)
        worker = _pick(header, worker_column, None, wcol, "worker ids", "--worker-column", p)
        label = _pick(header, label_column, lpre, None, "labels", "--label-column", p)
        if scol in header:
            bad = df[scol].str.strip().str.lower() == rejected
            if bad.any():
                skipped["rejected assignments"] = int(bad.sum())
                df = df[~bad]
    rows = pd.DataFrame({"task": df[task].str.strip(), "worker": df[worker].str.strip(),
                         "label": df[label].str.strip()}).reset_index(drop=True)
    empty = (rows == "").any(axis=1)
    if empty.any():
        skipped["rows with an empty task, worker or label"] = int(empty.sum())
        rows = rows[~empty].reset_index(drop=True)
    return Answers(path=p, fmt=kind, digest=digest(p), rows=rows, skipped=skipped)


def read_ids(path: str | Path, what: str, option: str) -> list[str]:
    """One id a row (the first column; a header row named task/id/class/name is dropped): tasks or class names."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{option} {p}: {'a folder' if p.is_dir() else 'no such file'}; expected a file with one "
                        f"{what} a row")
    try:
        df = pd.read_csv(p, header=None, dtype=str, keep_default_na=False, usecols=[0])
    except pd.errors.EmptyDataError:
        raise DataError(f"{option} {p}: empty file; expected one {what} a row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{option} {p}: not a readable list of {what}s ({str(e).strip()[:200]})") from None
    ids = [s.strip() for s in df[0].tolist()]
    if ids and ids[0].lower() in ("task", "id", "class", "name", "item"):
        ids = ids[1:]
    if not ids:
        raise DataError(f"{option} {p}: no {what}s; expected one {what} a row")
    blank = [i for i, s in enumerate(ids) if not s]
    if blank:
        raise DataError(f"{option} {p}: row {blank[0] + 1} is empty; expected one {what} a row")
    seen: dict[str, int] = {}
    for i, s in enumerate(ids):
        if s in seen:
            raise DataError(f"{option} {p}: {what} {s!r} is listed twice (rows {seen[s] + 1} and {i + 1}); expected "
                            "each once")
        seen[s] = i
    return ids
