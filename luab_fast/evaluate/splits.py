"""``NAME=KIND:PATH`` split arguments (``--split`` here, ``--val-data`` in the trainer) and ``--suite``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .._cli import UsageError
from .kinds import REGISTRY


def parse_split(item: str, option: str, bare: bool = False) -> tuple[str, Optional[str], Path]:
    """(name, kind, path) of ``NAME=KIND:PATH`` or ``KIND:PATH`` (named after its folder); with ``bare`` also
    ``NAME=PATH`` / ``PATH`` (kind None: the trainer's own class-name matching). ``KIND:`` is read as a kind
    only when it names one, so a path holding a colon still reads as a path."""
    name, eq, rest = item.partition("=")
    if not eq:
        name, rest = "", item
    kind, colon, path = rest.partition(":")
    if not (colon and kind in REGISTRY):
        if not bare:
            raise UsageError(f"{option} {item!r}: expected NAME=KIND:PATH with KIND one of {', '.join(REGISTRY)}"
                             + (f", got kind {kind!r}" if colon else ""))
        kind, path = None, rest
    name = name or Path(path).name
    if not name or not path:
        raise UsageError(f"{option} {item!r}: expected NAME=KIND:PATH, got an empty name or path")
    if not Path(path).exists():
        raise UsageError(f"{option} {name}={kind + ':' if kind else ''}{path}: {path} does not exist")
    return name, kind, Path(path)


LABEL_FILES = {"real": ("real.json",), "multilabel": ("human_accuracy.pickle", "human_accuracy.json")}
# loc's boxes (kinds_loc.py): Kaggle's CSV in the val folder or ROOT, else a folder of <image stem>.xml under ROOT
# (Kaggle's archive unpacks the ILSVRC XML there), else the XML beside each image
BOX_CSV = "LOC_val_solution.csv"
BOX_FOLDERS = ("ILSVRC/Annotations/CLS-LOC/val", "Annotations/CLS-LOC/val")


def suite(name: str, root: Path) -> tuple[list[tuple[str, str, Path]], dict[str, Path]]:
    """The standard test sets found under ``root`` by their usual folder names (each kind's ``suite_names``),
    as (split, kind, folder); ReaL and the multi-label subset of the validation images where their label files
    (``LABEL_FILES``) lie in the validation folder or in ``root``, returned as {kind: file}; ``loc`` where the
    validation folder is in wnid folders and its boxes are found (``BOX_CSV``, ``BOX_FOLDERS``, or XML beside the
    images), the CSV or folder returned as {"boxes": path}."""
    if name != "imagenet":
        raise UsageError(f"--suite: expected imagenet, got {name!r}")
    if not root.is_dir():
        raise UsageError(f"--suite imagenet {root}: " + ("not a folder" if root.exists() else "does not exist"))
    found = []
    for kind in REGISTRY.values():
        folder = next((root / n for n in kind.suite_names if (root / n).is_dir()), None)
        if folder is not None:
            found.append((kind.name, kind.name, folder))
    if not found:
        looked = sorted({n for k in REGISTRY.values() for n in k.suite_names})
        raise UsageError(f"--suite imagenet {root}: none of the standard folders is there (looked for "
                         f"{', '.join(looked)})")
    val = next((f for _, k, f in found if k == "imagenet"), None)
    files = {"in_distribution": val} if val is not None and any(d.is_dir() for d in val.iterdir()) else {}
    for kind, names in LABEL_FILES.items():
        where = [base / n for base in ((val, root) if val else ()) for n in names if (base / n).is_file()]
        if where:
            found.append((kind, kind, val))
            files[kind] = where[0]
    if "in_distribution" in files:  # loc reads the val images in wnid folders only
        boxes = _boxes(val, root)
        if boxes is not None:
            found.append(("loc", "loc", val))
            if boxes != val:
                files["boxes"] = boxes
    return found, files


def _boxes(val: Path, root: Path) -> Optional[Path]:
    """Where loc's boxes for ``val`` lie (``val`` itself: XML beside the images), or None."""
    csv = next((b / BOX_CSV for b in (val, root) if (b / BOX_CSV).is_file()), None)
    if csv is not None:
        return csv
    folder = next((root / n for n in BOX_FOLDERS if (root / n).is_dir() and any((root / n).glob("*.xml"))), None)
    if folder is not None:
        return folder
    return val if any(val.glob("*/*.xml")) else None
