"""``loc``: weakly supervised localisation on ImageNet val (the metrics of localization.py: pointing game, top-1
and GT-known localisation at IoU ≥ 0.5, MaxBoxAcc and MaxBoxAccV2 over thresholds, Choe et al. CVPR 2020).

Layout: the validation images in wnid folders, with their ILSVRC boxes from Kaggle's ``LOC_val_solution.csv``
(in the folder or the three above it, or ``--boxes FILE``), or from one Pascal-VOC XML per image (``--boxes DIR``
of ``<image stem>.xml``, the devkit's ``Annotations/CLS-LOC/val``; default: beside each image).

Score maps: a LUABModel's heat head (LUAB's own localisation output); any other model's class activation map of
the image's ground-truth class (its ``forward_features`` and linear classifier). They stay on the device (h × w
floats an image, with the top-1 class) until the split is done; the boxes are mapped into the split's evaluation
crop (``Kind.crop``: the whole shorter side by default, ``--crop-pct`` overrides) and everything is scored on a
224 × 224 canvas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .._cli import DataError
from ..data.crops import center_windows
from ..data.decode import image_sizes
from ..data.source import list_images
from .kinds import Kind, Split, logits_of, register, to_model

CANVAS = 224  # the evaluated crop's side the metrics are computed at (the protocol's 224 × 224)


def _boxes_by_stem(path: Path, files: list[str], given: Optional[Path]) -> dict[str, np.ndarray]:
    from .localization import read_box_xml, read_loc_solution

    csv = given if given is not None and given.is_file() else None
    if given is None:
        for base in (path, *list(path.resolve().parents)[:3]):
            if (base / "LOC_val_solution.csv").is_file():
                csv = base / "LOC_val_solution.csv"
                break
    if csv is not None:
        return {k: v[1] for k, v in read_loc_solution(csv).items()}
    out = {}
    for f in files:
        xml = (given / Path(f).stem if given is not None else Path(f).with_suffix("")).with_suffix(".xml")
        if xml.is_file():
            out[Path(f).stem] = read_box_xml(xml)[1]
    return out


class Localization(Kind):
    name, suite_names = "loc", ()
    # the WSOL protocol (clovaai/wsolevaluation data_loaders.py) resizes the whole image to 224 × 224, no crop;
    # the loader's windows are squares, so the nearest is the whole shorter side (boxes beyond it are clipped)
    crop_fraction = 1.0
    about = ("localisation: pointing game, top-1 / GT-known loc (IoU ≥ 0.5 at CAM threshold 0.2), MaxBoxAcc, "
             "MaxBoxAccV2; LUAB models' heat head, other models' CAM of the true class")

    def read(self, path, classes, options, split):
        where = f"--split {split}=loc:{path}"
        if not path.is_dir():
            raise DataError(f"{where}: expected ImageNet val in wnid folders, "
                            + ("got a file" if path.exists() else "it does not exist"))
        images = list_images(path, min_classes=1)
        labels = to_model(images.classes, classes, where)[images.labels]
        boxes = _boxes_by_stem(path, list(images.files), options.boxes)
        stems = [Path(f).stem for f in images.files]
        lacking = [f for f, s in zip(images.files, stems) if s not in boxes]
        if lacking:
            raise DataError(f"{where}: {len(lacking)} of {len(stems)} images have no box (looked in "
                            f"{options.boxes or 'LOC_val_solution.csv in and above the folder, or <stem>.xml beside'}"
                            f"), e.g. {lacking[0]}; give --boxes FILE|DIR")
        sizes = image_sizes(images.files)
        windows = center_windows(sizes, *self.crop(options))  # (y0, x0, side, side): the loader's crop
        crop_boxes = []
        for s, (y0, x0, side, _) in zip(stems, windows):
            b = (boxes[s].astype(np.float64) - [x0, y0, x0, y0]) * (CANVAS / side)
            crop_boxes.append(np.clip(np.floor(b), 0, CANVAS - 1).astype(np.int64))
        return Split(split, self.name, path, tuple(images.files), labels, class_names=tuple(classes),
                     extra={"boxes": crop_boxes})

    def outputs(self, model, images, labels, split_mask, k):
        """[B, 3 + h·w]: the top-1 class, h, w, then the score map."""
        if hasattr(model, "heat_head"):  # LUABModel: (logits, point, heat)
            logits, _, maps = model(images)
        else:
            from .localization import cam

            feats = model.forward_features(images)
            if feats.dim() != 4:
                raise DataError(f"loc: {type(model).__name__} gives no [B, F, h, w] feature map, so it has no "
                                f"class activation map")
            logits = logits_of(model.forward_head(feats))
            maps = cam(feats, model.get_classifier().weight, labels)
        top1 = logits.float().argmax(1, keepdim=True).float()
        shape = torch.tensor(maps.shape[-2:], dtype=torch.float32, device=maps.device).expand(len(maps), 2)
        return torch.cat([top1, shape, maps.float().flatten(1)], 1)

    def score(self, top, split):
        from .localization import LocalizationMeter

        h, w = (int(v) for v in top[0, 1:3])
        meter = LocalizationMeter()
        for lo in range(0, len(top), 256):
            part = top[lo:lo + 256]
            maps = torch.from_numpy(part[:, 3:].reshape(-1, h, w))
            correct = part[:, 0].astype(np.int64) == split.labels[lo:lo + 256]
            meter.update(maps, split.extra["boxes"][lo:lo + 256], correct=correct, image_size=(CANVAS, CANVAS))
        out = meter.compute()
        out["top1"] = float((top[:, 0].astype(np.int64) == split.labels).mean())
        return out


register(Localization())
