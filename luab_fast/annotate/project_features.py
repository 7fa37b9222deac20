"""Image features for a labelling project's learner: a timm backbone's pooled output (``num_classes=0``) on each
task's image, read through the library's loader (``luab_fast.data.build_loader``, eval crops, ImageNet mean/std).

Images are ``<task id>.<ext>`` files in one folder (the trainer's ``--labels`` stem rule). The features are kept in
the project (``features.npy``) with what made them (``features.json``), so a creation that is interrupted and run
again does not extract them twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from .._atomic import atomic_path, write_text
from .._cli import DataError, UsageError
from .project_io import digest

CACHE, CACHE_META = "features.npy", "features.json"


def image_files(folder: Path, tasks: list[str]) -> list[str]:
    """The image of each task, in the tasks' order; DataError naming the tasks without one."""
    from .._store.index import file_stem

    if not folder.is_dir():
        raise DataError(f"--images {folder}: {'a file' if folder.exists() else 'no such folder'}; expected a folder "
                        "of <task id>.<ext> images")
    by_stem: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            by_stem.setdefault(file_stem(p.name), str(p))
    missing = [t for t in tasks if t not in by_stem]
    if missing:
        raise DataError(f"--images {folder}: no image for {len(missing)} of the {len(tasks)} tasks, e.g. "
                        f"{missing[:3]}; expected files named <task id>.<ext>")
    return [by_stem[t] for t in tasks]


def extract_features(folder: Path, tasks: list[str], model: str, pretrained_path: Optional[str], root: Path,
                     batch_size: int = 64) -> np.ndarray:
    import timm
    import torch
    from tqdm import tqdm

    from ..data import build_loader
    from ..train.model import load_backbone

    files = image_files(folder, tasks)
    made_by = {"model": model, "pretrained_path": pretrained_path,
               "weights": digest(Path(pretrained_path)) if pretrained_path else "timm pretrained",
               "tasks": len(tasks), "files": digest_names(files)}
    cached = _cached(root, made_by)
    if cached is not None:
        return cached
    try:
        net = timm.create_model(model, pretrained=pretrained_path is None, num_classes=0)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"--model {model!r}: {e} (timm.list_models() lists the names)") from None
    except OSError as e:  # timm's pretrained download with no network
        raise DataError(f"--model {model}: its pretrained weights cannot be fetched ({e}); give them with "
                        "--pretrained-path FILE") from None
    if pretrained_path:
        load_backbone(net, pretrained_path)
    net.eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device)
    size = int(net.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    loader = build_loader((files, np.zeros(len(files), np.int64)), batch_size=batch_size, train=False, device=device,
                          image_size=size)
    out = np.zeros((len(files), net.num_features), np.float32)
    with torch.no_grad(), tqdm(total=len(files), desc=f"features ({model})", unit="img") as bar:
        for batch in loader:
            rows = batch["rows"].cpu().numpy()
            out[rows] = net(batch["images"]).float().cpu().numpy()
            bar.update(len(rows))
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(root / CACHE) as tmp, open(tmp, "wb") as f:
        np.save(f, out)
    write_text(root / CACHE_META, json.dumps(made_by, indent=1))
    return out


def digest_names(files: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(files).encode()).hexdigest()


def _cached(root: Path, made_by: dict) -> Optional[np.ndarray]:
    try:
        if json.loads((root / CACHE_META).read_text()) != made_by:
            return None
        arr = np.load(root / CACHE, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.ndim == 2 and arr.shape[0] == made_by["tasks"] else None
