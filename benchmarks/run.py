"""The one command: runs the whole benchmark suite on whatever device this machine has, prints the
markdown table of ratios and writes ``<out>/<device>-<mode>-<timestamp>.json`` (atomically).

    python -m benchmarks.run [--mode quick|full] [--out benchmarks/results] [-k EXPR] [--no-memory] [-- PYTEST_ARGS]

Exit status: pytest's (non-zero when any benchmark's correctness check fails or a benchmark errors),
and 5 when nothing ran.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks._record import markdown_table, write_json_atomic
from benchmarks.conftest import DOCUMENT, RUN_BY_RUNNER, results_path

HERE = Path(__file__).resolve().parent


class _Runner:
    """In-process pytest plugin: marks the session as run by this command and takes its results."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[RUN_BY_RUNNER] = True

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.doc = config.stash.get(DOCUMENT, None)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("quick", "full"), default="quick",
                        help="quick: small sizes for CI; full: the sizes of ../shared/docs/performance.md "
                             "(its ImageNet-100 annotation run alone ~500 s on 2 cores)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="directory for the results JSON")
    parser.add_argument("-k", dest="keyword", default=None, help="only benchmarks matching this pytest -k EXPR")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    args, extra = parser.parse_known_args(argv)
    return args, [a for a in extra if a != "--"]


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    pytest_args = [str(HERE), "--bench-mode", args.mode, "-p", "no:cacheprovider",
                   "--benchmark-columns=min,median,max,rounds", "--benchmark-sort=name", *extra]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    if args.no_memory:
        pytest_args.append("--bench-no-memory")
    runner = _Runner()
    status = int(pytest.main(pytest_args, plugins=[runner]))
    doc = runner.doc
    if not doc or not doc["benchmarks"]:
        print(f"\nno benchmark results (pytest exit status {status})", file=sys.stderr)
        return status or 5
    path = write_json_atomic(doc, results_path(args.out, doc))
    print("\n" + markdown_table(doc) + "\n")
    failed = [c["name"] for c in doc["benchmarks"] if c["status"] == "failed"]
    if failed:
        print(f"CORRECTNESS FAILED: {', '.join(failed)}", file=sys.stderr)
    print(f"results: {path}")
    return status or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
