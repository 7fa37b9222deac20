"""``python -m luab_fast.byproducts``: pack a release into a store, print its statistics, draw one image.

    python -m luab_fast.byproducts pack imagenet_ab_v1_0.tar.gz imagenet_ab.store [--strict]
    python -m luab_fast.byproducts info imagenet_ab.store
    python -m luab_fast.byproducts show imagenet_ab.store n01440764_18 [--image img.JPEG] --out fig.png
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from ._format import StoreError
from .store import ByproductStore, write_imagenet_store
from .store_coco import CocoByproductStore, write_coco_store


def open_any(path):
    """Opens an ImageNet-AB or a COCO-AB store, whichever ``path`` holds."""
    try:
        return ByproductStore.open(path)
    except StoreError as exc:
        if "holds 'coco'" in str(exc):
            return CocoByproductStore.open(path)
        raise


def _summarise(problems, limit: int = 10) -> str:
    by_reason = collections.Counter(p.reason.split(":")[0] for p in problems)
    lines = [f"{len(problems):,} problem(s) skipped:"]
    lines += [f"  {n:>8,} × {reason}" for reason, n in by_reason.most_common()]
    lines += [f"  e.g. {p.source}: {p.reason}" for p in problems[:limit]]
    return "\n".join(lines)


def cmd_pack(args: argparse.Namespace) -> int:
    src = Path(args.src)
    if not src.exists():
        print(f"error: SRC {src} does not exist", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if src.suffix == ".json":  # COCO-AB: one JSON list, streamed
        from .coco_ab import read_coco_ab

        reader = read_coco_ab(src, duplicates=args.duplicates, strict=args.strict, progress=not args.quiet)
        write = write_coco_store
    else:  # ImageNet-AB: a .tar.gz read as a stream, or an extracted directory
        from .imagenet_ab import read_imagenet_ab

        reader = read_imagenet_ab(src, strict=args.strict, progress=not args.quiet)
        write = write_imagenet_store
    try:
        path = write(reader, args.dst, meta={"source": str(src)})
    except ValueError as exc:  # strict mode: the first problem is fatal, nothing is written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    store = open_any(path)
    unit = "records" if store.kind == "coco" else "files"
    print(f"packed {len(store):,} {unit} from {src} into {path} in {dt:.1f} s ({len(store) / dt:,.0f} {unit}/s)")
    if reader.problems:
        print(_summarise(reader.problems))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .inspect import coco_stats, format_stats, store_stats

    store = open_any(args.store)
    if args.verify:
        store.verify()
        print("checksums: ok")
    print(f"{args.store}: {store.kind} byproduct store, format version {store.meta.get('version', 1)}")
    print(format_stats(store_stats(store) if store.kind == "imagenet" else coco_stats(store)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .inspect import draw

    store = open_any(args.store)
    try:
        image_id = int(args.image_id) if store.kind == "coco" else args.image_id
        out = draw(store, image_id, args.out, image=args.image)
    except KeyError:
        print(f"error: IMAGE_ID {args.image_id!r} is not in {args.store}", file=sys.stderr)
        return 2
    print(f"saved {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m luab_fast.byproducts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="parse a release into a memory-mapped store")
    pk.add_argument("src", help="ImageNet-AB .tar.gz (read as a stream) or extracted directory, or COCO-AB .json")
    pk.add_argument("dst", help="store directory to create (written to a temporary path, then renamed)")
    pk.add_argument("--strict", action="store_true", help="stop at the first problem instead of skipping it")
    pk.add_argument("--quiet", action="store_true", help="no progress bar")
    pk.add_argument("--duplicates", choices=["keep", "last"], default="keep",
                    help="COCO-AB: keep every record of an image id (default) or only the last")
    pk.set_defaults(fn=cmd_pack)
    inf = sub.add_parser("info", help="statistics of a store")
    inf.add_argument("store")
    inf.add_argument("--verify", action="store_true", help="also recompute every array's checksum")
    inf.set_defaults(fn=cmd_info)
    sh = sub.add_parser("show", help="draw one image's traces, clicks and boxes")
    sh.add_argument("store")
    sh.add_argument("image_id", help="file stem (ImageNet-AB, e.g. n01440764_18) or COCO image id")
    sh.add_argument("--image", help="the image file to draw over (default: a blank canvas of its size)")
    sh.add_argument("--out", required=True, help="output PNG")
    sh.set_defaults(fn=cmd_show)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
