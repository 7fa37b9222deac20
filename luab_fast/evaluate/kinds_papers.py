"""The kinds of the robustness papers' tables, registered in ``kinds.REGISTRY``: each wraps the layout reader
and the metric of its module (kinds_objectnet, kinds_imagenet_c, kinds_imagenet_o, kinds_si_score,
kinds_backgrounds; their docstrings cite the protocols) around the runner.

What each keeps of a batch on the device: ObjectNet, SI-Score and the Backgrounds Challenge score the logits in
ImageNet-1k's sorted-wnid order (their metrics take [N, 1000]): ``split.mask`` holds the model's index of each
of the 1,000 wnids, in that order, and ``outputs`` gathers those columns. ImageNet-C keeps the top-5 class
indices (75 folders × 50,000 images: the logits would not fit), ImageNet-O the logits of its 200 classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._cli import DataError
from .kinds import Kind, Split, imagenet_wnids, register, to_model
from .kinds_objectnet import BORDER_PX


class _ImageNetLogits(Kind):
    """A kind whose metric takes the logits of the 1,000 ImageNet classes in sorted-wnid order."""

    def outputs(self, model, images, labels, split_mask, k):
        return self.logits(model, images).index_select(1, split_mask)

    def _split(self, split: str, path: Path, files, classes, extra: dict[str, Any]) -> Split:
        order = to_model(imagenet_wnids(), classes, f"--split {split}={self.name}:{path} (scored over the 1,000 "
                                                    f"ImageNet classes)")
        return Split(split, self.name, path, tuple(files), np.full(len(files), -1, np.int64), order,
                     class_names=tuple(classes), extra=extra)


class ObjectNetKind(_ImageNetLogits):
    name, suite_names = "objectnet", ("objectnet-1.0", "objectnet")
    about = ("ObjectNet: top-1 over its 113 ImageNet-overlapping classes, ImageNet predictions mapped as its "
             "authors' code does; top1_restricted: argmax over the mapped ImageNet classes only")
    # its authors' loader: the 2-px frame cut off, then Resize(224) + CenterCrop(224), the whole shorter side
    crop_fraction, crop_border = 1.0, BORDER_PX

    def read(self, path, classes, options, split):
        from .kinds_objectnet import read_objectnet

        on = read_objectnet(path)
        return self._split(split, path, on.files, classes, {"labels": on.labels, "map": on.imagenet_to_objectnet})

    def score(self, top, split):
        from .kinds_objectnet import objectnet_scores

        return objectnet_scores(top, split.extra["labels"], split.extra["map"])


class SIScoreKind(_ImageNetLogits):
    factor = "object_size"
    name, suite_names = "si-size", ("si-score/object_size", "object_size")
    about = "SI-Score (object size): top-1 over all images, and per size"
    crop_fraction = 1.0  # its demo scores the whole (square) image: a centre crop would cut off objects at the edges

    def read(self, path, classes, options, split):
        from .kinds_si_score import read_si_score

        si = read_si_score(path, self.factor)
        return self._split(split, path, si.files, classes, {"si": si})

    def score(self, top, split):
        from .kinds_si_score import si_score_accuracy

        return si_score_accuracy(top, split.extra["si"])


class SILocation(SIScoreKind):
    factor, name, suite_names = "object_location", "si-location", ("si-score/object_location", "object_location")
    about = "SI-Score (object location): top-1 over all images, and per location"


class SIRotation(SIScoreKind):
    factor, name, suite_names = "object_rotation", "si-rotation", ("si-score/object_rotation", "object_rotation")
    about = "SI-Score (object rotation): top-1 over all images, and per rotation"


class Backgrounds(_ImageNetLogits):
    name, suite_names = "backgrounds", ("bg_challenge", "backgrounds_challenge")
    about = ("Backgrounds Challenge (IN-9): top-1 per variation, the 1,000-class prediction mapped to IN-9; "
             "top1 = original; bg_gap = mixed_same − mixed_rand")
    crop_fraction = 1.0  # its in9_eval.py only converts the 224 × 224 images to tensors: the whole image

    def read(self, path, classes, options, split):
        from .kinds_backgrounds import VARIATIONS, read_in9, read_in_to_in9

        table = options.in9_map or path / "in_to_in9.json"
        if not Path(table).is_file():
            raise DataError(f"--split {split}=backgrounds:{path}: the ImageNet → IN-9 map is not in the data "
                            f"archive: give --in9-map FILE (in_to_in9.json of MadryLab/backgrounds_challenge); "
                            f"{table} does not exist")
        files, labels, groups = [], [], []
        for variation in VARIATIONS:
            if (path / variation / "val").is_dir():
                f, lab = read_in9(path, variation)
                files += f
                labels.append(lab)
                groups += [variation] * len(f)
        if "original" not in groups:
            raise DataError(f"--split {split}=backgrounds:{path}: {path / 'original' / 'val'} is missing (the "
                            f"variations are <root>/<variation>/val/<class>/)")
        return self._split(split, path, files, classes, {"labels": np.concatenate(labels), "groups":
                                                         np.asarray(groups), "map": read_in_to_in9(table)})

    def score(self, top, split):
        from .kinds_backgrounds import bg_gap, in9_accuracy

        groups, labels = split.extra["groups"], split.extra["labels"]
        out: dict[str, Any] = {}
        for g in dict.fromkeys(groups.tolist()):
            sel = groups == g
            out[f"top1/{g}"] = in9_accuracy(top[sel], labels[sel], split.extra["map"])["top1"]
        out["top1"] = out["top1/original"]
        if "top1/mixed_same" in out and "top1/mixed_rand" in out:
            out["bg_gap"] = bg_gap(out["top1/mixed_same"], out["top1/mixed_rand"])
        out["n"] = int((groups == "original").sum())
        return out


class ImageNetC(Kind):
    name, suite_names = "imagenet-c", ("imagenet-c", "ImageNet-C")
    about = ("ImageNet-C: error per corruption and severity; mCE and relative mCE in % of AlexNet's (100 = "
             "AlexNet); top1 = mean accuracy over all corrupted images")
    crop_fraction = 1.0  # its test.py: CenterCrop(224) of the 224 × 224 corrupted images, i.e. the whole image

    def read(self, path, classes, options, split):
        from .kinds_imagenet_c import read_imagenet_c

        parts = read_imagenet_c(path)
        where = f"--split {split}={self.name}:{path}"
        files = [f for p in parts for f in p.files]
        labels = to_model([w for p in parts for w in p.wnids], classes, where)
        groups = np.repeat(np.arange(len(parts)), [len(p.files) for p in parts])
        keys = [(p.corruption, p.severity) for p in parts]
        return Split(split, self.name, path, tuple(files), labels, class_names=tuple(classes),
                     extra={"groups": groups, "keys": keys, "clean_error": options.clean_error})

    def score(self, top, split):
        from .kinds_imagenet_c import corruption_errors

        hit = top[:, 0] == split.labels
        groups = split.extra["groups"]
        errors = {key: 1.0 - float(hit[groups == g].mean()) for g, key in enumerate(split.extra["keys"])}
        out = corruption_errors(errors, split.extra["clean_error"])
        return {"top1": float(hit.mean()), **out, "n": int(len(hit))}


class ImageNetO(Kind):
    name, suite_names = "imagenet-o", ("imagenet-o",)
    headline = "aupr"
    about = ("ImageNet-O: AUPR (and AUROC) of −max softmax over its 200 classes, ImageNet-O against the ImageNet "
             "val images of those classes")

    def read(self, path, classes, options, split):
        from .kinds_imagenet_o import in_distribution_files, read_imagenet_o

        if options.in_distribution is None:
            raise DataError(f"--split {split}=imagenet-o:{path}: needs the ImageNet validation images in wnid "
                            f"folders as its in-distribution set: give --in-distribution DIR (--suite finds val)")
        files_o, wnids = read_imagenet_o(path)
        held = sorted(set(wnids))
        mask = to_model(held, classes, f"--split {split}=imagenet-o:{path}")
        files_in = in_distribution_files(options.in_distribution, held)
        return Split(split, self.name, path, tuple(files_o + files_in), np.full(len(files_o) + len(files_in), -1),
                     mask, class_names=tuple(classes), extra={"n_o": len(files_o)})

    def outputs(self, model, images, labels, split_mask, k):
        return self.logits(model, images).index_select(1, split_mask)

    def score(self, top, split):
        from .kinds_imagenet_o import imagenet_o_scores

        n = split.extra["n_o"]
        return imagenet_o_scores(top[:n], top[n:], np.ones(top.shape[1], bool))


for _kind in (ObjectNetKind(), ImageNetC(), ImageNetO(), SIScoreKind(), SILocation(), SIRotation(), Backgrounds()):
    register(_kind)
