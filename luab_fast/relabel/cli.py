"""``python -m luab_fast.relabel``: pack ReLabel's label maps into a store, inspect it, draw one map, or
generate maps for any image folder with a timm classifier.

    python -m luab_fast.relabel pack relabel_imagenet/ relabel.store [--float16] [--strict]
    python -m luab_fast.relabel info relabel.store [--verify]
    python -m luab_fast.relabel show relabel.store n01440764_10026 [--image img.JPEG] --out fig.png
    python -m luab_fast.relabel generate --model resnet50 --images train/ --out maps/ [--topk 5] [--size 475]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from .._cli import UsageError
from .._store import cli as store_cli
from .store import LabelMapStore, pack_label_maps


def cmd_pack(args: argparse.Namespace) -> int:
    src = Path(args.src)
    if not src.is_dir():
        raise UsageError(f"SRC {src} is not a directory of <wnid>/<stem>.pt label maps")
    res = pack_label_maps(src, args.dst, score_dtype="float16" if args.float16 else "float32", strict=args.strict,
                          progress=not args.quiet, num_classes=args.num_classes,
                          replace_with_problems=args.replace_with_problems)
    print(f"packed {res.rows:,} label maps from {src} into {res.path} in {res.seconds:.1f} s "
          f"({res.rows / max(res.seconds, 1e-9):,.0f} files/s)")
    if res.problems:
        print(store_cli.summarise_problems(res.problems))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    store = store_cli.open_for_info(LabelMapStore.open, args)
    size = sum(p.stat().st_size for p in Path(args.store).iterdir())
    m = store.meta
    print(f"{args.store}: ReLabel label-map store, format version 1")
    for key, value in [("rows", len(store)), ("topk", store.topk), ("size", f"{store.size}x{store.size}"),
                       ("num_classes", store.num_classes), ("score_dtype", m.get("score_dtype")),
                       ("wnids", len(store.arrays["wnids"])), ("problems_at_pack", m.get("problems", 0)),
                       ("bytes_on_disk", f"{size:,}"), ("source", m.get("source"))]:
        print(f"{key:<20} {value}")
    return 0


def draw_map(store: LabelMapStore, image_id: str, out: str | os.PathLike, image: str | os.PathLike | None = None
             ) -> Path:
    """Top-1 class index and score of every cell as an S×S grid over the image (rows = y, squashed onto the
    whole image like the generator) or over a blank canvas, saved atomically to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i = store.row(image_id)
    scores, idx = (t[0].numpy() for t in store.gather([i]))
    best = scores.argmax(0)
    top_s = np.take_along_axis(scores, best[None], 0)[0]
    top_c = np.take_along_axis(idx, best[None], 0)[0]
    s = store.size
    fig, ax = plt.subplots(figsize=(9, 9))
    w = h = float(s)
    if image is not None:
        from PIL import Image

        img = Image.open(image).convert("RGB")
        ax.imshow(img, extent=(0, s, s, 0))
    hm = ax.imshow(top_s, extent=(0, s, s, 0), cmap="viridis", alpha=0.45 if image is not None else 0.9)
    fig.colorbar(hm, ax=ax, shrink=0.7, label="top-1 score (as stored)")
    for y in range(s):
        for x in range(s):
            ax.text(x + 0.5, y + 0.5, f"{top_c[y, x]}\n{top_s[y, x]:.2g}", ha="center", va="center",
                    fontsize=max(4, 90 // s), color="white")
    for k in range(s + 1):
        ax.axhline(k, color="k", lw=0.4)
        ax.axvline(k, color="k", lw=0.4)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_title(f"{store.ids[i]} ({store.wnids[i]}): top-1 class / score per cell")
    return store_cli.save_store_figure(fig, out)


def cmd_show(args: argparse.Namespace) -> int:
    out = store_cli.show_destination(args)
    store = LabelMapStore.open(args.store)
    try:
        out = draw_map(store, args.image_id, out, image=args.image)
    except KeyError:
        raise store_cli.id_not_in_store(args) from None
    print(f"saved {out}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate_label_maps

    n = generate_label_maps(args.model, args.images, args.out, topk=args.topk, size=args.size, scores=args.scores,
                            batch_size=args.batch_size, device=args.device, arch=args.arch, progress=not args.quiet)
    print(f"wrote {n:,} label maps under {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p, sub, pk = store_cli.new_parser("python -m luab_fast.relabel", __doc__,
                                      "pack <wnid>/<stem>.pt label maps into a memory-mapped store",
                                      "directory of <wnid>/<stem>.pt files ([2, K, S, S] float32)")
    pk.add_argument("--float16", action="store_true", help="store scores as float16 (half the size)")
    pk.add_argument("--strict", action="store_true", help="stop at the first bad file instead of skipping it")
    pk.add_argument("--num-classes", type=int, default=1000, help="class indices must be below this (1000)")
    store_cli.add_replace_flag(pk)
    pk.add_argument("--quiet", action="store_true", help="no progress bar")
    pk.set_defaults(fn=cmd_pack)
    store_cli.add_info(sub, "shape and provenance of a store", cmd_info)
    store_cli.add_show(sub, "draw one image's top-1 class and score per cell",
             "file stem (e.g. n01440764_10026) or a path ending in one",
             "the image file to draw under the grid (default: a blank canvas)", cmd_show)
    g = sub.add_parser("generate", help="write label maps for an image folder with a timm classifier")
    g.add_argument("--model", required=True, help="timm model name (random weights, offline) or checkpoint path")
    g.add_argument("--arch", help="timm architecture of a checkpoint that does not name it")
    g.add_argument("--images", required=True, help="directory of images (<wnid>/<file> or loose files)")
    g.add_argument("--out", required=True, help="output root: <wnid>/<stem>.pt files")
    g.add_argument("--topk", type=int, default=5)
    g.add_argument("--size", type=int, help="input side in pixels (default: the model's; ReLabel: 475)")
    g.add_argument("--scores", choices=["logits", "softmax"], default="logits",
                   help="store raw logits like the release (default) or per-location softmax probabilities")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--device", help="default: cuda when available, else cpu")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(fn=cmd_generate)
    args = p.parse_args(argv)
    return args.fn(args)  # errors: one line and an exit status from luab_fast._cli.run (__main__)


if __name__ == "__main__":  # pragma: no cover
    from .._cli import run

    sys.exit(run(main))
