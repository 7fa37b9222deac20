"""What the store commands (``python -m luab_fast.byproducts`` / ``luab_fast.relabel``) share: the parser's
frame, the arguments of ``pack`` / ``info`` / ``show`` that mean the same in both, the checks ``show`` runs before
opening anything, and the problem summary ``pack`` prints."""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from .._atomic import check_destination, save_figure
from .._cli import UsageError
from .format import REPLACE_FLAG


def summarise_problems(problems, limit: int = 10) -> str:
    by_reason = collections.Counter(p.reason.split(":")[0] for p in problems)
    lines = [f"{len(problems):,} problem(s) skipped:"]
    lines += [f"  {n:>8,} × {reason}" for reason, n in by_reason.most_common()]
    lines += [f"  e.g. {p.source}: {p.reason}" for p in problems[:limit]]
    return "\n".join(lines)


def new_parser(prog: str, doc: str | None, pack_help: str, src_help: str):
    """(parser, its sub-commands, the ``pack`` sub-command with SRC and DST): the module docstring as the
    description, one sub-command required; ``pack`` comes first, its options follow SRC and DST."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help=pack_help)
    pk.add_argument("src", help=src_help)
    pk.add_argument("dst", help="store directory to create (written to a temporary path, then renamed)")
    return p, sub, pk


def add_replace_flag(pk: argparse.ArgumentParser) -> None:
    pk.add_argument(REPLACE_FLAG, action="store_true",
                    help="replace an existing DST even though problem files were skipped (default: keep it)")


def add_info(sub, help: str, fn) -> None:
    inf = sub.add_parser("info", help=help)
    inf.add_argument("store")
    inf.add_argument("--verify", action="store_true", help="also recompute every array's checksum")
    inf.set_defaults(fn=fn)


def add_show(sub, help: str, id_help: str, image_help: str, fn) -> None:
    sh = sub.add_parser("show", help=help)
    sh.add_argument("store")
    sh.add_argument("image_id", help=id_help)
    sh.add_argument("--image", help=image_help)
    sh.add_argument("--out", required=True, help="output PNG")
    sh.set_defaults(fn=fn)


def open_for_info(opener, args: argparse.Namespace):
    """The store of ``info``, checked through when ``--verify`` asks."""
    store = opener(args.store)
    if args.verify:
        store.verify()
        print("checksums: ok")
    return store


def show_destination(args: argparse.Namespace) -> Path:
    """``show``'s ``--out`` and ``--image``, checked before opening anything: a typo costs nothing."""
    out = check_destination(args.out, "--out")
    if args.image is not None and not Path(args.image).is_file():
        raise UsageError(f"--image {args.image}: no such file")
    return out


def id_not_in_store(args: argparse.Namespace) -> UsageError:
    return UsageError(f"IMAGE_ID {args.image_id!r} is not in {args.store}; `info {args.store}` describes the store")


def save_store_figure(fig, out) -> Path:
    """Saves a store's drawing ``fig`` to ``out`` through a unique temporary (umask's mode, never a torn PNG) and
    closes it."""
    import matplotlib.pyplot as plt

    try:
        return save_figure(fig, check_destination(out, "out"), dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
