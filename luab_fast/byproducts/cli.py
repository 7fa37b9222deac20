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
    if src.suffix == ".json":
        print("error: COCO-AB packing is not implemented yet (issue 3 is in progress); "
              "ImageNet-AB (.tar.gz or directory) is", file=sys.stderr)
        return 2
    from .imagenet_ab import read_imagenet_ab

    t0 = time.perf_counter()
    reader = read_imagenet_ab(src, strict=args.strict, progress=not args.quiet)
    try:
        path = write_imagenet_store(reader, args.dst, meta={"source": str(src)})
    except ValueError as exc:  # strict mode: the first problem is fatal, nothing is written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    store = ByproductStore.open(path)
    print(f"packed {len(store):,} samples from {src} into {path} in {dt:.1f} s ({len(store) / dt:,.0f} files/s)")
    if reader.problems:
        print(_summarise(reader.problems))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .inspect import format_stats, store_stats

    store = ByproductStore.open(args.store)
    if args.verify:
        store.verify()
        print("checksums: ok")
    print(f"{args.store}: {store.kind} byproduct store, format version {store.meta.get('version', 1)}")
    print(format_stats(store_stats(store)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .inspect import draw

    store = ByproductStore.open(args.store)
    try:
        out = draw(store, args.image_id, args.out, image=args.image)
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
    pk.add_argument("src", help="ImageNet-AB .tar.gz (read as a stream) or an extracted directory")
    pk.add_argument("dst", help="store directory to create (written to a temporary path, then renamed)")
    pk.add_argument("--strict", action="store_true", help="stop at the first problem instead of skipping it")
    pk.add_argument("--quiet", action="store_true", help="no progress bar")
    pk.set_defaults(fn=cmd_pack)
    inf = sub.add_parser("info", help="statistics of a store")
    inf.add_argument("store")
    inf.add_argument("--verify", action="store_true", help="also recompute every array's checksum")
    inf.set_defaults(fn=cmd_info)
    sh = sub.add_parser("show", help="draw one image's traces, clicks and boxes")
    sh.add_argument("store")
    sh.add_argument("image_id", help="file stem, e.g. n01440764_18")
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
