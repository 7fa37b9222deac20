"""ImageNet-AB reader throughput, files/s, in one process on the same synthetic release:

- ``notebook``: the official dataloader notebook's way: ``xml.etree.ElementTree.parse`` per file of an
  extracted directory, reading only what its target needs (``selected`` and the first ``selectedRecord``);
- ``python``: ``read_imagenet_ab(engine="python")``: every field, reference parser, from the .tar.gz;
- ``cpp``: ``read_imagenet_ab(engine="cpp")``: every field, compiled batch parser, from the .tar.gz
  (gzip + tar included), and ``cpp-dir`` from the extracted directory.

    python -m benchmarks.imagenet_ab_reader [--n 20000] [--repeats 5] [--data DIR] [--out results.json]

Data: tests/fixtures/imagenet_ab.py::write_many (1-3 records a file, 10-40 trace points a record, ~40%
ILSVRC-enriched), generated once into --data (default: a temporary directory). Each provider runs once to
warm up (page cache, imports), then ``--repeats`` times; median and best files/s are printed. Target:
cpp ≥ 20,000 files/s from the .tar.gz on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from luab_fast.byproducts.imagenet_ab import read_imagenet_ab
from tests.fixtures.imagenet_ab import write_many


def notebook(root: Path) -> int:
    """imagenet_dataloader.ipynb's per-image work: parse, average the first click of selected records."""
    n = 0
    for wnid in sorted(os.listdir(root)):
        for f in sorted(os.listdir(root / wnid)):
            tree = ET.parse(root / wnid / f)
            pts = []
            for m in tree.getroot().findall("metadata"):
                rec = m.find("selectedRecord")
                if m.find("selected").text == "True" and rec is not None:
                    pts.append((float(rec.find("x").text), float(rec.find("y").text)))
            n += 1
    return n


def ours(src: Path, engine: str) -> int:
    r = read_imagenet_ab(src, engine=engine)
    n = sum(1 for _ in r)
    assert not r.problems, r.problems[:3]
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", type=Path, default=None, help="where the synthetic release is (re)used")
    ap.add_argument("--providers", default="notebook,python,cpp,cpp-dir")
    ap.add_argument("--out", type=Path, default=None, help="append the results as one JSON line")
    args = ap.parse_args(argv)

    data = args.data or Path(tempfile.mkdtemp(prefix="imagenet_ab_bench_"))
    tar = data / f"imagenet_ab_many_{args.n}_{args.seed}.tar.gz"
    if not tar.exists() or not (data / "many" / "train_xml").is_dir():
        t0 = time.perf_counter()
        write_many(data, args.n, args.seed, extract=True)
        print(f"generated {args.n} files in {time.perf_counter() - t0:.1f} s under {data}")
    xml_dir = data / "many" / "train_xml"
    runs = {"notebook": lambda: notebook(xml_dir), "python": lambda: ours(tar, "python"),
            "cpp": lambda: ours(tar, "cpp"), "cpp-dir": lambda: ours(data / "many", "cpp")}
    results = {}
    for name in args.providers.split(","):
        fn = runs[name]
        n = fn()  # warm-up, and the count
        assert n == args.n, f"{name} read {n} files, expected {args.n}"
        reps = args.repeats if name in ("cpp", "cpp-dir") else max(1, min(args.repeats, 2))
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            rates.append(n / (time.perf_counter() - t0))
        results[name] = {"median_files_per_s": statistics.median(rates), "best_files_per_s": max(rates),
                         "repeats": reps}
        print(f"{name:9s} median {statistics.median(rates):9,.0f} files/s   best {max(rates):9,.0f} files/s")
    tar_mb = tar.stat().st_size / 2**20
    print(f"({args.n} files, {tar_mb:.1f} MiB .tar.gz, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f})")
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "n": args.n,
                                "cpus": os.cpu_count(), "tar_mib": tar_mb, "results": results}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
