"""What an evaluation writes to ``--out``, each file atomically:

- ``results.json``: ``{"date", "device", "models": [{"label", "model", "checkpoint", "sha256", "weights",
  "splits": {split: {"kind", metric: value, "n": images, "transform": {"image_size", "crop_fraction",
  "crop_border", "interpolation"}}}}]}`` (``transform``: how the split was decoded, runner.transform);
- ``results.md``: one table, a row per split and metric, a column per model (percentages);
- with several models, ``results.png``: a bar chart of each split's headline top-1, model beside model.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from .. import _atomic
from .kinds import REGISTRY

# what results.md shows of a split's metrics, in this order (per_class stays in results.json: 1,000 numbers)
SHOWN = ("top1", "top5")


def document(models: list[dict[str, Any]], device: str) -> dict[str, Any]:
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": device,
            "models": models}


def table(doc: dict[str, Any]) -> str:
    models = doc["models"]
    splits = list(dict.fromkeys(s for m in models for s in m["splits"]))
    head = "| split | kind | metric | " + " | ".join(m["label"] for m in models) + " | images |"
    rows = [head, "|" + "---|" * (len(models) + 4)]
    notes, decoded = {}, {}
    for split in splits:
        first = next(m["splits"][split] for m in models if split in m["splits"])
        kind = first["kind"]
        notes[kind] = REGISTRY[kind].about if kind in REGISTRY else kind
        if "transform" in first:
            decoded[split] = _decoding(first["transform"])
        for metric in [k for k in SHOWN if k in first] + [k for k in first if k not in SHOWN and _number(first[k])
                                                          and k not in ("n", "n_in") and "/" not in k]:
            cells = [_cell(m["splits"].get(split, {}).get(metric), metric) for m in models]
            rows.append(f"| {split} | {kind} | {metric} | " + " | ".join(cells) + f" | {first.get('n', '')} |")
    lines = [f"Evaluated {doc['date']} on {doc['device']}.", "", *rows, ""]
    lines += [f"- `{k}`: {v}" for k, v in notes.items()]
    if decoded:
        lines += ["", "Decoding (each model at its own crop side):"] + [f"- `{k}`: {v}" for k, v in decoded.items()]
    lines += ["", "Models:"] + [f"- {m['label']}: {m['model']}, {m['checkpoint']} (sha256 {m['sha256'][:16]}…, "
                                f"{m['weights']} weights)" for m in models]
    return "\n".join(lines) + "\n"


def _decoding(t: dict[str, Any]) -> str:
    border = f"{t['crop_border']}-px border cut off, then " if t.get("crop_border") else ""
    crop = ("the whole shorter side" if t["crop_fraction"] == 1 else
            f"the centre {100 * t['crop_fraction']:g}% of the shorter side")
    return f"{border}{crop} (a centred square), {t['interpolation']} resize"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# metrics already in percent (ImageNet-C's, of AlexNet's error) or not a share (the best threshold)
_AS_IS = ("mce", "relative_mce", "best_threshold")


def _cell(v: Any, metric: str) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.2f}" if metric in _AS_IS else f"{100 * v:.2f}"
    return str(v)


def chart(doc: dict[str, Any], path: Path) -> Path:
    """Grouped bars: each split's headline metric (top-1; ImageNet-O's AUPR), one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = doc["models"]
    splits = list(dict.fromkeys(s for m in models for s in m["splits"]))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(splits) * max(1, len(models) / 2)), 3.5))
    x = np.arange(len(splits))
    for i, m in enumerate(models):
        vals = [100 * m["splits"].get(s, {}).get(_headline(m["splits"].get(s)), float("nan")) for s in splits]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, label=m["label"])
    ax.set_xticks(x, splits)
    ax.set_ylabel("top-1 (%; ImageNet-O: AUPR)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        return _atomic.save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)


def _headline(split: Any) -> str:
    kind = REGISTRY.get(split["kind"]) if split else None
    return kind.headline if kind else "top1"


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [_atomic.write_text(out / "results.json", json.dumps(doc, indent=2)),
               _atomic.write_text(out / "results.md", table(doc))]
    if len(doc["models"]) > 1:
        written.append(chart(doc, out / "results.png"))
    else:  # an earlier comparison's chart must not pass for this evaluation's
        (out / "results.png").unlink(missing_ok=True)
    return written
