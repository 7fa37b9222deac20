"""Scoring a trained model on an evaluation split: top-1, top-5, per-class accuracy, and where boxes are known
the pointing accuracy of its heat-map peak and regressed point."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..evaluate.trainer import KindLoader, evaluate_kind


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, boxes: Optional[dict[str, np.ndarray]] = None
             ) -> dict[str, Any]:
    """top-1, top-5, per-class accuracy, the mean cross-entropy ``loss`` against the labels (timm's eval_loss); with
    ``boxes`` (stem → [n, 4] or [4] (x0, y0, x1, y1) normalised to
    the original image) also the pointing accuracy (1 − localisation error) of the predicted heat-map peak and
    point: the share of the boxed images whose peak / point falls inside one of their boxes."""
    if isinstance(loader, KindLoader):  # --val-data NAME=KIND:PATH: scored by its kind (luab_fast.evaluate)
        return evaluate_kind(model, loader)
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.0
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
        loss_sum += float(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
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
    out = {"top1": correct1 / max(total, 1), "top5": correct5 / max(total, 1), "loss": loss_sum / max(total, 1),
           "images": total,
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
