"""The built-in demo dataset: the default data of ``python -m luab_fast.train``, of the annotation
simulation and of CI. Generated once, deterministically (same seed → byte-identical files), from
scikit-learn's bundled handwritten digits — no download.

    paths = ensure_demo(size="tiny")        # cached in $LUAB_FAST_CACHE or ~/.cache/luab_fast
    ImageFolder(paths.train); ByproductStore.open(paths.store)

Layout of ``root`` (``DemoPaths`` names each part):

- ``train/``, ``iid/``, ``ood/``: ImageFolder trees ``<split>/<wnid>/<wnid>_<n>.JPEG``, 96×96 RGB JPEG.
  Class ``k`` (digit k) has the synthetic wnid ``n0000000k``; ``n`` is unique over all splits. The
  background texture is class ``k``'s with probability ``correlation`` (default ``CORRELATION`` = 0.5) in
  train and iid (else another class's) and independent of the digit in ood.
- ``byproducts.tar.gz``: ImageNet-AB-format XML (``train_xml/<wnid>/<stem>.xml``) of simulated annotators
  for every train image; ``byproducts.store``: the same, packed (``pack_demo_byproducts``).
- ``ood_byproducts.tar.gz`` / ``ood_byproducts.store``: the same simulation on the ood images, held out: no
  training reads it; the trainer's attention figure shows it beside the model's predicted attention.
- ``labels.csv`` (``task,worker,label``: task = image stem, label = class index) from simulated crowd
  workers, and ``truth.csv`` (``task,label``), train split only — the input of ``python -m
  luab_fast.aggregate labels.csv --truth truth.csv``.
- ``manifest.json``, written last: format version, parameters, class ids, counts per split, and per image
  its split, stem, class, digit box (canvas px, x0/y0 inclusive, x1/y1 exclusive), background class.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from .. import _atomic
from .._checks import is_integer, is_number
from ..byproducts import ByproductStore, StoreError
from . import _demo_render as R
from ._demo_byproducts import write_byproducts
from ._demo_crowd import simulate_crowd, worker_ids
from ._demo_render import SPLITS, WNIDS, plan_images

__all__ = ["CORRELATION", "DEMO_VERSION", "DemoPaths", "default_cache_dir", "demo_problem", "ensure_demo", "make_demo",
           "pack_demo_byproducts"]

DEMO_VERSION = 3  # bump whenever generation changes: caches of another version are regenerated
# seeds the random streams; bumped only when the draws should change (version 3 added the held-out ood traces
# as a fifth stream and kept version 2's images, crowd labels and train byproducts)
DRAWS_VERSION = 2
# default share of train/iid images whose background is their own class's: a spurious cue strong enough to
# pay off (and to cost the labels-only baseline on ood), weak enough that the 3-epoch CPU demo still learns
# the digits (at 0.8–0.9 both models learned the background alone; README, "Set-up")
CORRELATION = 0.5
FORMAT = "luab_fast.demo"
# images per split, crowd workers, byproduct annotators in the pool
SIZES = {"default": dict(train=5000, iid=1000, ood=1000, crowd_workers=50, annotator_pool=40),
         "tiny": dict(train=200, iid=60, ood=60, crowd_workers=10, annotator_pool=8)}
# make_demo's keyword defaults, which ensure_demo forwards and compares with a cached manifest
_DEFAULTS = dict(miss_rate=0.1, reselect_rate=0.05, annotators=(2, 4), labels_per_task=3, mean_accuracy=0.75)


@dataclass(frozen=True)
class DemoPaths:
    """Where the parts of a demo dataset live (nothing is checked or created by building one)."""

    root: Path
    train: Path  # ImageFolder roots
    iid: Path
    ood: Path
    byproducts: Path  # ImageNet-AB-format .tar.gz (train split)
    store: Path  # packed ByproductStore directory
    ood_byproducts: Path  # the same for the ood split: held out, never trained on (the attention figure's reference)
    ood_store: Path
    labels: Path  # crowd labels CSV
    truth: Path  # true labels CSV
    manifest: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "DemoPaths":
        r = Path(root)
        return cls(root=r, train=r / "train", iid=r / "iid", ood=r / "ood", byproducts=r / "byproducts.tar.gz",
                   store=r / "byproducts.store", ood_byproducts=r / "ood_byproducts.tar.gz",
                   ood_store=r / "ood_byproducts.store", labels=r / "labels.csv", truth=r / "truth.csv",
                   manifest=r / "manifest.json")

    def split(self, name: str) -> Path:
        """The ImageFolder root of split ``name`` (train, iid or ood)."""
        if name not in SPLITS:
            raise ValueError(f"name must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def load_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest.read_text())


def _params(seed: int, size: str, correlation: float, miss_rate: float, reselect_rate: float,
            annotators: tuple[int, int], labels_per_task: int, mean_accuracy: float) -> dict[str, Any]:
    """Checks the generation parameters (errors name the argument) and returns them as JSON values."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    for name, v in (("correlation", correlation), ("miss_rate", miss_rate), ("reselect_rate", reselect_rate),
                    ("mean_accuracy", mean_accuracy)):
        if not is_number(v):
            raise ValueError(f"{name} must be a number, got {v!r}")
    for name, v in (("correlation", correlation), ("miss_rate", miss_rate), ("reselect_rate", reselect_rate)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    pool = SIZES[size]["annotator_pool"]
    if not (isinstance(annotators, (tuple, list)) and len(annotators) == 2 and all(map(is_integer, annotators))
            and 1 <= annotators[0] <= annotators[1] <= pool):
        raise ValueError(f"annotators must be (lo, hi) with 1 <= lo <= hi <= {pool}, got {annotators!r}")
    lo, hi = annotators
    if not (is_integer(labels_per_task) and 1 <= labels_per_task <= SIZES[size]["crowd_workers"]):
        raise ValueError(f"labels_per_task must be in [1, {SIZES[size]['crowd_workers']}], got {labels_per_task!r}")
    if not 0.0 < mean_accuracy <= 1.0:
        raise ValueError(f"mean_accuracy must be in (0, 1], got {mean_accuracy}")
    return dict(seed=int(seed), size=size, correlation=float(correlation), miss_rate=float(miss_rate),
                reselect_rate=float(reselect_rate), annotators=[int(lo), int(hi)],
                labels_per_task=int(labels_per_task), mean_accuracy=float(mean_accuracy))


def _spread(mean_accuracy: float) -> float:
    """Workers' accuracies spread ±0.2 around the mean (0.55–0.95 for the default 0.75), less near 0 or 1."""
    return min(0.2, mean_accuracy, 1.0 - mean_accuracy)


class _Progress:
    """A tqdm bar on stderr when enabled (and tqdm is installed), else nothing."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="item", file=sys.stderr)
            except ImportError:
                print(f"{desc}: {total:,} steps ...", file=sys.stderr)

    def __call__(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_csv(path: Path, header: str, rows: Iterator[str]) -> None:
    with open(path, "w", newline="\n") as f:
        f.write(header + "\n")
        f.writelines(rows)


def _generate(root: Path, p: dict[str, Any], progress: bool) -> None:
    """Writes every part of the demo into the (empty) directory ``root``; the manifest last."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, targets = digits.images, digits.target
    cfg = SIZES[p["size"]]
    counts = {s: cfg[s] for s in SPLITS}
    # independent streams: changing e.g. the miss rate leaves the images and crowd labels unchanged
    ss_plan, ss_img, ss_byp, ss_crowd, ss_ood = np.random.SeedSequence([p["seed"], DRAWS_VERSION]).spawn(5)
    plan = plan_images(np.random.default_rng(ss_plan), counts, p["correlation"], targets)
    n_train = counts["train"]
    bar = _Progress(len(plan) + n_train + counts["ood"], f"luab_fast demo ({p['size']})", progress)
    rng = np.random.default_rng(ss_img)
    for split in SPLITS:
        for wnid in WNIDS:
            (root / split / wnid).mkdir(parents=True)
    for item in plan:
        out = R.render(rng, images[item["digit"]], item["background"])
        rel = f"{item['split']}/{WNIDS[item['class']]}/{item['stem']}.JPEG"
        (root / rel).write_bytes(out.jpeg)
        item.update(file=rel, box=list(out.box), bytes=len(out.jpeg))
        bar()
    train = [it for it in plan if it["split"] == "train"]
    paths = DemoPaths.at(root)
    stats = {}  # byproducts of the train split (trained on) and of the ood split (held out, for the figure)
    for split, tar, ss in (("train", paths.byproducts, ss_byp), ("ood", paths.ood_byproducts, ss_ood)):
        items = ((WNIDS[it["class"]], it["stem"], tuple(it["box"])) for it in plan if it["split"] == split)
        stats[split] = write_byproducts(tar, items, R.CANVAS, ss, annotators=tuple(p["annotators"]),
                                        n_workers=cfg["annotator_pool"], miss_rate=p["miss_rate"],
                                        reselect_rate=p["reselect_rate"], tick=bar)
    bar.close()
    crowd = simulate_crowd(np.array([it["class"] for it in train]), cfg["crowd_workers"], p["labels_per_task"],
                           ss_crowd, mean_accuracy=p["mean_accuracy"], spread=_spread(p["mean_accuracy"]))
    wids = worker_ids(np.random.default_rng(ss_crowd.spawn(1)[0]), cfg["crowd_workers"], letter_first=True)
    _write_csv(paths.labels, "task,worker,label", (f"{train[t]['stem']},{wids[w]},{lab}\n"
                                                   for t, w, lab in zip(crowd.task, crowd.worker, crowd.label)))
    _write_csv(paths.truth, "task,label", (f"{it['stem']},{it['class']}\n" for it in train))
    digests = {tar.name: ByproductStore.open(_pack(tar, store)).meta["source_blake2b"] for tar, store in _stores(paths)}
    manifest = dict(format=FORMAT, version=DEMO_VERSION, **p, canvas=R.CANVAS, classes=WNIDS,
                    class_names=[f"digit_{k}" for k in range(R.N_CLASSES)],
                    splits={s: {"count": counts[s]} for s in SPLITS}, byproduct_stats=stats["train"],
                    ood_byproduct_stats=stats["ood"],
                    crowd_worker_accuracy=dict(zip(wids, np.round(crowd.accuracy, 4).tolist())),
                    files={"byproducts": paths.byproducts.name, "store": paths.store.name,
                           "ood_byproducts": paths.ood_byproducts.name, "ood_store": paths.ood_store.name,
                           "labels": paths.labels.name, "truth": paths.truth.name,
                           "byproducts_blake2b": digests[paths.byproducts.name],
                           "ood_byproducts_blake2b": digests[paths.ood_byproducts.name],
                           "sizes": {f: (root / f).stat().st_size
                                     for f in (paths.byproducts.name, paths.ood_byproducts.name, paths.labels.name,
                                               paths.truth.name)}},
                    images=plan,
                    complete=True)
    tmp = paths.manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, paths.manifest)


def make_demo(root: str | os.PathLike, seed: int = 0, size: str = "default", correlation: float = CORRELATION, *,
              miss_rate: float = 0.1, reselect_rate: float = 0.05, annotators: tuple[int, int] = (2, 4),
              labels_per_task: int = 3, mean_accuracy: float = 0.75, progress: bool | None = None,
              overwrite: bool = False) -> DemoPaths:
    """Generates the demo dataset into ``root`` (see the module doc for the layout) and returns its paths.

    Everything is written into a temporary sibling directory and renamed onto ``root`` when complete,
    so ``root`` never holds a half-written dataset. ``root`` must not exist or be empty unless
    ``overwrite``. ``progress`` (default: on for size "default") shows a bar on stderr.
    Sizes: "default" = 5,000 train / 1,000 iid / 1,000 ood images, "tiny" = 200 / 60 / 60.
    """
    p = _params(seed, size, correlation, miss_rate, reselect_rate, annotators, labels_per_task, mean_accuracy)
    root = Path(root)
    if root.exists() and not overwrite and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"root {root} exists and is not empty; pass overwrite=True to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    show = size == "default" if progress is None else progress
    # named with this process's pid: a generation killed midway leaves a folder the next one removes
    tmp = _atomic.make_temp_dir(root)
    try:
        _generate(tmp, p, show)
        old = None
        if root.exists():  # a directory cannot be renamed over a non-empty one: move it aside first
            old = _atomic.make_temp_dir(root)
            os.replace(root, old / "x")
        try:
            os.replace(tmp, root)
        except BaseException:
            if old is not None:
                os.replace(old / "x", root)  # put the previous contents back rather than leave nothing
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if show:
        print(f"luab_fast demo ({size}, seed {seed}) written to {root} in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
    return DemoPaths.at(root)


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def pack_demo_byproducts(paths: DemoPaths) -> Path:
    """Packs ``paths.byproducts`` into the ``ByproductStore`` at ``paths.store`` with the library's reader
    and packer, and returns ``paths.store``. Idempotent: a store that opens and was packed from a tar of
    the same checksum is kept as it is."""
    if not paths.byproducts.is_file():
        raise FileNotFoundError(f"paths.byproducts {paths.byproducts} does not exist; run make_demo first")
    return _pack(paths.byproducts, paths.store)


def _stores(paths: DemoPaths) -> tuple[tuple[Path, Path], ...]:
    """(tar.gz, packed store) of the train byproducts and of the held-out ood ones."""
    return (paths.byproducts, paths.store), (paths.ood_byproducts, paths.ood_store)


def _pack(tar: Path, store: Path) -> Path:
    from ..byproducts import read_imagenet_ab, write_imagenet_store

    digest = _digest(tar)
    with contextlib.suppress(StoreError):
        if ByproductStore.open(store).meta.get("source_blake2b") == digest:
            return store
    reader = read_imagenet_ab(tar, strict=True)
    # the meta holds no absolute path or time, so the store is byte-identical for a seed too
    write_imagenet_store(reader, store, meta={"source": tar.name, "source_blake2b": digest})
    _share(store)
    return store


def _share(path: Path) -> None:
    """Gives a directory made by mkdtemp (mode 0700) the usual umask mode, so a shared cache is readable."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)


def demo_problem(root: str | os.PathLike, expected: dict[str, Any] | None = None) -> str | None:
    """Why ``root`` is not a complete demo dataset (of parameters ``expected``, as in its manifest), or
    None when it is: checks the manifest, its version, and the presence and size of every file."""
    paths = DemoPaths.at(root)
    try:
        m = paths.load_manifest()
    except (OSError, ValueError) as e:
        return f"no readable manifest ({e.__class__.__name__}: {e})"
    if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("version") != DEMO_VERSION \
            or m.get("complete") is not True:
        got = (m.get("format"), m.get("version")) if isinstance(m, dict) else type(m).__name__
        return f"manifest is {got!r}, expected a complete {FORMAT} version {DEMO_VERSION}"
    for k, v in (expected or {}).items():
        if m.get(k) != v:
            return f"manifest has {k}={m.get(k)!r}, expected {v!r}"
    try:
        sizes = [(paths.root / f, n) for f, n in m["files"]["sizes"].items()]
        sizes += [(paths.root / it["file"], it["bytes"]) for it in m["images"]]
        for path, n in sizes:
            if path.stat().st_size != n:
                return f"{path} has {path.stat().st_size} bytes, the manifest says {n}"
    except (OSError, KeyError, TypeError) as e:
        return f"missing or unreadable file ({e.__class__.__name__}: {e})"
    for tar, store in _stores(paths):
        try:  # opening checks the store's own manifest checksum and every array's dtype and shape (cheap)
            packed_from = ByproductStore.open(store).meta.get("source_blake2b")
        except StoreError as e:
            return f"no usable packed store {store.name} ({e})"
        if packed_from != m["files"].get(tar.name.replace(".tar.gz", "_blake2b")):
            return f"{store} was packed from another {tar.name}"
    return None


def default_cache_dir(seed: int = 0, size: str = "default", params: dict[str, Any] | None = None) -> Path:
    """``$LUAB_FAST_CACHE/demo-<size>-seed<seed>``, or under ``~/.cache/luab_fast`` when unset. ``params``
    (as ``_params`` returns them) that differ from the defaults add a short hash of themselves to the
    name, so a demo of other parameters gets its own cache instead of evicting the default one."""
    base = os.environ.get("LUAB_FAST_CACHE") or Path.home() / ".cache" / "luab_fast"
    name = f"demo-{size}-seed{seed}"
    if params is not None and params != _params(seed, size, CORRELATION, **_DEFAULTS):
        name += "-" + hashlib.blake2b(json.dumps(params, sort_keys=True).encode(), digest_size=4).hexdigest()
    return Path(base) / name


def _why_not_replaceable(root: Path) -> Optional[str]:
    """None when regenerating the demo at ``root`` may replace what is there: nothing, an empty directory, or a
    demo this code made and nothing else (its manifest names the demo format, of any version; or, without one, a
    store packed from its tar.gz). Otherwise why not: anything else may be the user's and is never deleted."""
    if not root.exists():
        return None
    if not root.is_dir():
        return "it is a file"
    names = {q.name for q in root.iterdir()}
    if not names:
        return None
    paths = DemoPaths.at(root)
    ours = {getattr(paths, f).name for f in DemoPaths.__dataclass_fields__ if f != "root"}
    foreign = sorted(n for n in names - ours if not (n.startswith(".") and n.endswith((".tmp", ".old"))))
    if foreign:  # even beside a demo: regenerating would delete them
        return f"it holds files that are not the demo's: {foreign[:5]}"
    with contextlib.suppress(OSError, ValueError):
        m = paths.load_manifest()
        return None if isinstance(m, dict) and m.get("format") == FORMAT else "its manifest is not a demo's"
    for tar, store in _stores(paths):  # a demo that lost its manifest: its stores say where they came from
        with contextlib.suppress(StoreError):
            if ByproductStore.open(store).meta.get("source") == tar.name:
                return None
    return "it has the demo's file names but no demo manifest or store"


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """An exclusive lock beside ``root`` so concurrent processes generate it once (POSIX; else no-op)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename alone keeps the cache consistent
        yield
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_demo(root: str | os.PathLike | None = None, seed: int = 0, size: str = "default",
                correlation: float = CORRELATION, *, progress: bool | None = None, **options: Any) -> DemoPaths:
    """The demo dataset at ``root`` (default: ``default_cache_dir(seed, size, params)``), generated by
    ``make_demo`` only when ``root`` does not already hold a complete one of the same version and
    parameters (``options``: make_demo's keyword arguments); a partial or corrupt one is replaced. A ``root``
    that holds anything but a demo (a file, a directory of other content) is an error, never replaced."""
    p = _params(seed, size, correlation, **{**_DEFAULTS, **options})
    given = root is not None  # the default cache directory is always ours to regenerate
    root = Path(root) if given else default_cache_dir(seed, size, p)
    above = next((d for d in root.parents if d.exists()), None)  # the folder the demo would be created in
    if above is not None and not above.is_dir():
        raise ValueError(f"--demo-root {root}: {above} is a file, not a folder; give a directory path"
                         + ("" if given else " (set LUAB_FAST_CACHE to a folder)"))
    if demo_problem(root, p) is None:
        return DemoPaths.at(root)
    why = _why_not_replaceable(root) if given else None
    if why is not None:  # regenerating would delete it
        raise ValueError(f"--demo-root {root} exists and is not (only) a luab_fast demo: {why}; give an empty or "
                         f"new directory")
    with _lock(root):
        problem = demo_problem(root, p)
        if problem is None:  # another process finished it while we waited
            return DemoPaths.at(root)
        if root.exists():
            print(f"luab_fast demo: {root} is unusable ({problem}); regenerating", file=sys.stderr)
        return make_demo(root, seed, size, correlation, progress=progress, overwrite=True,
                         **{k: p[k] for k in _DEFAULTS})

