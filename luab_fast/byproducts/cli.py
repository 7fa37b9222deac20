"""``python -m luab_fast.byproducts``: pack a release into a store, print its statistics, draw one image.

    python -m luab_fast.byproducts pack imagenet_ab_v1_0.tar.gz imagenet_ab.store [--strict]
    python -m luab_fast.byproducts info imagenet_ab.store
    python -m luab_fast.byproducts show imagenet_ab.store n01440764_18 [--image img.JPEG] --out fig.png

A pack that finds nothing valid fails; one that skipped problem files never replaces an existing store unless
--replace-with-problems is given. Exit status: 2 for a bad argument, 1 for bad data (a corrupt archive, a damaged
store).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .._cli import UsageError
from .._store import cli as store_cli
from .._store.errors import StoreError
from .._store.format import MANIFEST
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


def _check_pack_paths(src: Path, dst: Path) -> None:
    if not src.exists():
        raise UsageError(f"SRC {src} does not exist; give an ImageNet-AB .tar.gz or extracted folder, or a COCO-AB "
                         f".json")
    if (src / MANIFEST).is_file():
        raise UsageError(f"SRC {src} is a packed store, not a release; give the release archive or folder")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError(f"DST {dst} is SRC; pack into a new path")


def cmd_pack(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    _check_pack_paths(src, dst)
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
        path = write(reader, dst, meta={"source": str(src)}, replace_with_problems=args.replace_with_problems)
    except ValueError:  # strict, nothing valid, or problems over an existing store: nothing was written
        if reader.problems:  # the error line says what happened; this says which files
            print(store_cli.summarise_problems(reader.problems))
        raise
    dt = time.perf_counter() - t0
    store = open_any(path)
    unit = "records" if store.kind == "coco" else "files"
    print(f"packed {len(store):,} {unit} from {src} into {path} in {dt:.1f} s ({len(store) / dt:,.0f} {unit}/s)")
    if reader.problems:
        print(store_cli.summarise_problems(reader.problems))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .inspect import coco_stats, format_stats, store_stats

    store = store_cli.open_for_info(open_any, args)
    print(f"{args.store}: {store.kind} byproduct store, format version {store.meta.get('version', 1)}")
    print(format_stats(store_stats(store) if store.kind == "imagenet" else coco_stats(store)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .inspect import draw

    out = store_cli.show_destination(args)
    store = open_any(args.store)
    if store.kind == "coco":
        try:
            image_id = int(args.image_id)
        except ValueError:
            raise UsageError(f"IMAGE_ID: expected an integer COCO image id, got {args.image_id!r}") from None
    else:
        image_id = args.image_id
    try:
        out = draw(store, image_id, out, image=args.image)
    except KeyError:
        raise store_cli.id_not_in_store(args) from None
    print(f"saved {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p, sub, pk = store_cli.new_parser("python -m luab_fast.byproducts", __doc__,
                                      "parse a release into a memory-mapped store",
                                      "ImageNet-AB .tar.gz (read as a stream) or extracted directory, or COCO-AB .json")
    pk.add_argument("--strict", action="store_true", help="stop at the first problem instead of skipping it")
    pk.add_argument("--quiet", action="store_true", help="no progress bar")
    store_cli.add_replace_flag(pk)
    pk.add_argument("--duplicates", choices=["keep", "last"], default="keep",
                    help="COCO-AB: keep every record of an image id (default) or only the last")
    pk.set_defaults(fn=cmd_pack)
    store_cli.add_info(sub, "statistics of a store", cmd_info)
    store_cli.add_show(sub, "draw one image's traces, clicks and boxes",
             "file stem (ImageNet-AB, e.g. n01440764_18) or COCO image id",
             "the image file to draw over (default: a blank canvas of its size)", cmd_show)
    args = p.parse_args(argv)
    return args.fn(args)  # errors: one line and an exit status from luab_fast._cli.run (__main__)


if __name__ == "__main__":  # pragma: no cover
    from .._cli import run

    sys.exit(run(main))
