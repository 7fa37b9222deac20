"""What a run leaves for people to read: the results table, the training curves, the attention figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch


def table(metrics: dict[str, Any]) -> str:
    """Markdown table of top-1 per split for each model, and LUAB − baseline when both ran; then the
    localisation (pointing accuracy) of each model and split that has it."""
    models = [m for m in ("baseline", "luab") if m in metrics["models"]]
    splits = sorted({s for m in models for s in metrics["models"][m]["eval"]})
    head = "| split | " + " | ".join(f"{m} top-1" for m in models) + (" | difference |" if len(models) == 2 else " |")
    lines = [head, "|" + "---|" * (len(models) + 1 + (len(models) == 2))]
    for s in splits:
        vals = [metrics["models"][m]["eval"][s]["top1"] for m in models]
        row = f"| {s} | " + " | ".join(f"{100 * v:.2f}%" for v in vals)
        if len(models) == 2:
            row += f" | {100 * (vals[1] - vals[0]):+.2f} pts"
        lines.append(row + " |")
    for m in models:
        for s in splits:
            ev = metrics["models"][m]["eval"][s]
            if "pointing_heat" in ev:
                lines.append(f"\n{m} on {s}: heat-map peak inside the annotated box on "
                             f"{100 * ev['pointing_heat']:.1f}% of {ev['boxed_images']:,} boxed images, regressed "
                             f"point on {100 * ev['pointing_point']:.1f}%")
    return "\n".join(lines)


def _save(fig, path: Path) -> None:
    from .._atomic import save_figure

    save_figure(fig, path, dpi=110, bbox_inches="tight")  # a unique temporary, the umask's mode, then a rename


def plot_curves(histories: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["loss", "cls", "point", "heat"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(axes, keys):
        for name, hist in histories.items():
            pts = [(r["step"], r[key]) for r in hist if key in r]
            if pts:
                x, y = zip(*pts)
                k = max(1, len(y) // 50)  # a moving average keeps the trend readable
                ys = np.convolve(y, np.ones(k) / k, mode="valid")
                ax.plot(x[k - 1:], ys, label=name)
        ax.set_title(key)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:  # a part no run logged (no --val-data: no top-1) gets no legend
            ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


@torch.no_grad()
def _trace_heat(traces, stems: list[str], boxes: torch.Tensor, flips: torch.Tensor,
                side: int) -> Optional[torch.Tensor]:
    """[B, side, side] the annotators' trace heat map of each image over its crop (zeros where the store has no
    record of it), or None without a store."""
    if traces is None:
        return None
    from ..byproducts import ByproductStore
    from ..ops import rasterize_traces

    store = ByproductStore.open(traces)
    rows = torch.as_tensor(np.asarray(store.rows(stems), np.int64))
    known = rows >= 0
    heat = rasterize_traces(**store.raster_inputs("cpu"), rows=rows.clamp(min=0), boxes=boxes.float().cpu(),
                            flips=flips.cpu(), output_size=(side, side), sigma=2.0,
                            weighting="dwell", normalize="sum")
    return heat * known[:, None, None]


def plot_attention(model, loader, path: Path, n: int = 6, human: dict | None = None, traces=None) -> None:
    """A few evaluation images: each with its annotated digit box, the annotators' trace heat map (``traces``: a
    ByproductStore of these images that training never read) and the model's predicted heat map and point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..data.decode import MEAN, STD

    rows = np.linspace(0, len(loader.images) - 1, n).round().astype(np.int64)  # spread over the classes
    batch = loader.batch(rows, 0)
    model.eval()
    with torch.no_grad():
        logits, point, heat = model(batch["images"][:n])
    pred = logits.argmax(1).cpu()
    imgs = batch["images"][:n].cpu() * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    prob = heat.flatten(1).softmax(1).reshape(heat.shape).cpu()
    stems = [loader.images.stems[int(r)] for r in batch["rows"][:n]]
    side = imgs.shape[-1]
    human_heat = _trace_heat(traces, stems, batch["boxes"][:n], batch["flips"][:n], 32)
    panels = ["image"] + (["traces"] if human_heat is not None else []) + ["predicted"]
    fig, axes = plt.subplots(len(panels), n, figsize=(2.2 * n, 2.3 * len(panels)), squeeze=False)
    for k in range(min(n, len(imgs))):
        for panel, ax in zip(panels, axes[:, k]):
            ax.imshow(imgs[k].permute(1, 2, 0).clamp(0, 1).numpy())
            if panel == "traces":
                ax.imshow(human_heat[k].numpy(), cmap="viridis", alpha=0.6, extent=(0, side, side, 0),
                          interpolation="bilinear")
            elif panel == "predicted":
                ax.imshow(prob[k].numpy(), cmap="inferno", alpha=0.55, extent=(0, side, side, 0),
                          interpolation="bilinear")
                ax.plot(float(point[k, 0]) * side, float(point[k, 1]) * side, "c+", ms=12, mew=2)
            boxes = (human or {}).get(stems[k])
            bx = batch["boxes"][k].cpu().numpy()
            sx, sy = side / (bx[2] - bx[0]), side / (bx[3] - bx[1])
            for box in np.atleast_2d(boxes) if boxes is not None else []:  # mapped from the image into this crop
                x0, y0 = (box[0] - bx[0]) * sx, (box[1] - bx[1]) * sy
                ax.add_patch(Rectangle((x0, y0), (box[2] - box[0]) * sx, (box[3] - box[1]) * sy, fill=False,
                                       ec="lime", lw=1.5))
            ax.axis("off")
        y, p = int(batch["labels"][k]), int(pred[k])
        axes[0, k].set_title(f"label {y} · predicted {p}", fontsize=8, color="green" if y == p else "red")
    titles = {"image": "digit box (green)", "traces": "annotators' traces (held out)",
              "predicted": "predicted attention (+ point)"}
    for row, panel in enumerate(panels):
        if row > 0:
            axes[row, 0].set_title(titles[panel], fontsize=8, loc="left")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
