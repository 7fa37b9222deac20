"""The on-disk container of every packed store: a directory of ``.npy`` arrays (memory-mapped on open)
and a ``manifest.json`` naming the format, its version, each array's dtype, shape and BLAKE2b checksum,
and a checksum of the manifest itself. Written into a temporary sibling directory and renamed into
place only when complete, so a crash never leaves a half-written store under the final name."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .._atomic import make_temp_dir
from .._cli import DataError

MANIFEST = "manifest.json"
_CHUNK = 8 << 20
_ARRAY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # an array's file is <name>.npy inside the store


class StoreError(DataError):
    """A store that cannot be opened: missing, corrupt, of another kind or of an unsupported version (bad data:
    exit status 1 on the command line)."""


def damaged(path, detail: str) -> StoreError:
    """The one message for a store whose content contradicts itself (a shrunk array, an offset past its data,
    an index out of range): it was damaged after packing, or edited."""
    return StoreError(f"{path} is damaged ({detail}): re-pack it or run info --verify")


def _digest_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _manifest_digest(body: Mapping[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


# per store format: what it is called and the command that packs one
_KINDS = {"luab_fast.relabel": ("label-map store", "python -m luab_fast.relabel pack"),
          "luab_fast.byproducts": ("store", "python -m luab_fast.byproducts pack")}


def _kind(fmt: str) -> tuple[str, str]:
    return _KINDS.get(fmt, ("store", "python -m luab_fast.byproducts pack"))


def check_writable(dst: str | os.PathLike, fmt: str) -> None:
    """Raises ValueError unless packing may write ``dst``: a new path, an empty directory or a store of ``fmt``
    (replaced). Anything else may be the user's data (an image folder, a release archive) and is never replaced.
    Packers call it before their (long) parse too."""
    dst = Path(dst)
    if not dst.exists() or (dst.is_dir() and not any(dst.iterdir())):
        return
    try:
        found = json.loads((dst / MANIFEST).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        found = None
    if found != fmt:
        what = "a file" if dst.is_file() else f"a {found} store" if isinstance(found, str) else \
            f"a directory without a store manifest ({MANIFEST})"
        raise ValueError(f"dst {dst} exists and is not a {fmt} {_kind(fmt)[0]} (it is {what}); choose a new path "
                         f"or delete it yourself")


REPLACE_FLAG = "--replace-with-problems"


def is_store(dst: str | os.PathLike) -> bool:
    return (Path(dst) / MANIFEST).is_file()


def check_pack_result(dst: str | os.PathLike, rows: int, problems: Sequence, source, what: str,
                      replace_with_problems: bool = False, expected: str = "") -> None:
    """Refuses, before anything is written, a pack that found nothing valid, and a pack with problems that would
    replace an existing store (a partial release must not silently replace a good store); DataError names the
    source, the first problem and the way out."""
    first = f"; first: {problems[0].source}: {problems[0].reason}" if problems else ""
    kept = f"; {dst} was left as it is" if is_store(dst) else "; nothing was written"
    if rows == 0:
        if not problems and Path(source).is_file() and Path(source).stat().st_size == 0:
            first = "; the file is empty (0 bytes)"
        raise DataError(f"{source}: no valid {what} found ({len(problems)} problem(s){first}){kept}"
                        f"{'; expected ' + expected if expected else ''}")
    if problems and is_store(dst) and not replace_with_problems:
        raise DataError(f"{source}: {len(problems)} problem(s) while packing{first}; {dst} holds a store and was "
                        f"left as it is: fix the source or pack into a new path, or pass {REPLACE_FLAG} "
                        f"(replace_with_problems=True) to replace it with the {rows} valid {what} anyway")


def write_store(dst: str | os.PathLike, fmt: str, version: int, arrays: Mapping[str, np.ndarray],
                meta: Mapping[str, Any]) -> Path:
    """Writes ``arrays`` and a manifest into ``dst`` atomically (temp dir + rename); replaces an existing
    store of the same format at ``dst`` only after the new one is complete, and nothing else
    (:func:`check_writable`)."""
    dst = Path(dst)
    check_writable(dst, fmt)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(dst)  # umask's mode (mkdtemp makes 0700); a dead writer's is swept by the next pack
    try:
        entries = {}
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.hasobject:
                raise TypeError(f"array {name!r} has dtype object; stores hold plain numpy dtypes only")
            path = tmp / f"{name}.npy"
            np.save(path, arr, allow_pickle=False)
            entries[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "blake2b": _digest_file(path)}
        body = {"format": fmt, "version": version, "arrays": entries, "meta": dict(meta)}
        manifest = {**body, "manifest_blake2b": _manifest_digest(body)}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        old = None
        if dst.exists():  # checked above: an empty directory or an old store; moved aside, deleted once replaced
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, old / "x")
        try:
            os.replace(tmp, dst)
        except BaseException:
            if old is not None:  # put the old store back rather than leave nothing
                os.replace(old / "x", dst)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return dst
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load_manifest(path: Path, fmt: str) -> dict[str, Any]:
    """The manifest's body (format, version, arrays, meta), checked for shape and checksum; StoreError else."""
    mf = path / MANIFEST
    if not mf.is_file():
        raise StoreError(not_a_store(path, fmt))
    try:
        manifest = json.loads(mf.read_text())
        body = {k: manifest[k] for k in ("format", "version", "arrays", "meta")}
        digest = manifest["manifest_blake2b"]
    except (ValueError, KeyError, TypeError, OSError) as exc:  # OSError: unreadable; ValueError: not JSON/UTF-8
        raise StoreError(f"{mf} is unreadable ({exc}); delete {path} and re-pack it") from exc
    if _manifest_digest(body) != digest:
        raise StoreError(f"{mf} fails its checksum: the store is corrupt; re-pack it")
    if not isinstance(body["arrays"], dict) or not isinstance(body["meta"], dict):
        raise damaged(path, f"{MANIFEST}: 'arrays' and 'meta' must be objects")
    for name, info in body["arrays"].items():
        # a name is a file inside the store: nothing like '../x' may reach outside it
        if not _ARRAY_NAME.match(name) or not isinstance(info, dict) or not isinstance(info.get("dtype"), str) \
                or not isinstance(info.get("shape"), list) or not isinstance(info.get("blake2b"), str):
            raise damaged(path, f"{MANIFEST}: bad entry for array {name!r}")
    return body


def read_store(path: str | os.PathLike, fmt: str, versions: tuple[int, ...]) -> tuple[dict[str, np.ndarray],
                                                                                      dict[str, Any]]:
    """Opens a store: checks format, version, the manifest checksum and every array's dtype and shape;
    arrays come back memory-mapped (read-only). Full data checksums: :func:`verify_store`; how the arrays fit
    together: :func:`check_layout`."""
    path = Path(path)
    body = _load_manifest(path, fmt)
    if body["format"] != fmt:
        raise StoreError(f"{path} is a {body['format']!r} store, expected {fmt!r}")
    if body["version"] not in versions:
        raise StoreError(f"{path} has format version {body['version']}, this luab_fast reads {list(versions)}; "
                         "re-pack it with this version")
    arrays = {}
    for name, info in body["arrays"].items():
        try:
            arr = np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy's header parser also raises SyntaxError, TokenError, ...
            raise StoreError(f"{path}: array {name!r} is unreadable ({type(exc).__name__}: {exc}); re-pack the "
                             f"store") from exc
        if arr.dtype.str != info["dtype"] or list(arr.shape) != info["shape"]:
            raise StoreError(f"{path}: array {name!r} is {arr.dtype.str}{list(arr.shape)}, the manifest says "
                             f"{info['dtype']}{info['shape']}; re-pack the store")
        arrays[name] = arr
    return arrays, body["meta"]


# A store layout: array name → (dtype: a numpy dtype, or "S" for any fixed-width bytes; trailing dimensions;
# length: None (any), "N" (the row count), "N+1", an offsets array's name (its last value) or that name + "+1").
Layout = Mapping[str, tuple[Any, tuple[int, ...], "str | None"]]


def _expected_len(spec: str, n: int, arrays: Mapping[str, np.ndarray]) -> int:
    base, plus = (spec[:-2], 1) if spec.endswith("+1") else (spec, 0)
    return (n if base == "N" else int(arrays[base][-1])) + plus


def check_layout(path, arrays: Mapping[str, np.ndarray], layout: Layout, rows: str, *, full: bool = False,
                 refs: Sequence[tuple[str, str]] = (), ranges: Mapping[str, tuple[int, int]] | None = None) -> None:
    """Raises :func:`damaged` unless the arrays fit together: every name of ``layout`` present with its dtype and
    trailing shape, each length what the row count or its offsets array says, every offsets array starting at 0.
    All that reads a few values (``open`` runs it). ``full`` also reads everything: offsets never decrease, each
    ``(array, table)`` of ``refs`` indexes inside its table, each array of ``ranges`` holds values in [lo, hi)."""
    missing = [name for name in layout if name not in arrays]
    if missing:
        raise damaged(path, f"arrays {missing} are missing")
    n = len(arrays[rows]) if arrays[rows].ndim else -1
    for name, (dtype, trailing, length) in layout.items():
        a = arrays[name]
        ok_dtype = a.dtype.kind == "S" if dtype == "S" else a.dtype == np.dtype(dtype)
        if not ok_dtype or a.ndim != 1 + len(trailing) or tuple(a.shape[1:]) != tuple(trailing):
            want = "bytes" if dtype == "S" else np.dtype(dtype).name
            raise damaged(path, f"array {name!r} is {a.dtype.name}{list(a.shape)}, expected {want}"
                                f"[{', '.join(['n', *map(str, trailing)])}]")
        if length is None:
            continue
        if length.endswith("offsets") or length.endswith("offsets+1"):
            off = arrays[length.removesuffix("+1")]
            if len(off) == 0 or int(off[0]) != 0:
                raise damaged(path, f"array {length.removesuffix('+1')!r} does not start at 0")
        want = _expected_len(length, n, arrays)
        if len(a) != want:
            raise damaged(path, f"array {name!r} has {len(a)} rows, expected {want} "
                                f"({'the row count' if length.startswith('N') else length + '[-1]'})")
    if not full:
        return
    for name, (_, _, _) in layout.items():
        if name.endswith("offsets") and len(arrays[name]) > 1 and bool((np.diff(arrays[name]) < 0).any()):
            raise damaged(path, f"array {name!r} decreases")
    for name, table in refs:
        a = np.asarray(arrays[name])
        if a.size and (int(a.min()) < 0 or int(a.max()) >= len(arrays[table])):
            raise damaged(path, f"array {name!r} holds values in [{int(a.min())}, {int(a.max())}], outside its "
                                f"table {table!r} of {len(arrays[table])}")
    for name, (lo, hi) in (ranges or {}).items():
        a = np.asarray(arrays[name])
        if a.size and (int(a.min()) < lo or int(a.max()) >= hi):
            raise damaged(path, f"array {name!r} holds values in [{int(a.min())}, {int(a.max())}], expected "
                                f"[{lo}, {hi})")


def check_index(path, table: np.ndarray, keys: np.ndarray, full: bool) -> None:
    """The on-disk hash table over ``keys``: a power-of-two length above the key count (cheap); with ``full``, rows
    in [-1, len(keys)) and every key found at a row holding the same key."""
    from ._index import lookup

    cap = len(table)
    if cap < 2 * len(keys) - 1 or cap < 16 or cap & (cap - 1):
        raise damaged(path, f"the index has {cap} slots for {len(keys)} keys")
    if not full:
        return
    if cap and (int(table.min()) < -1 or int(table.max()) >= len(keys)):
        raise damaged(path, "the index points outside the rows")
    found = lookup(np.asarray(table), np.asarray(keys), np.asarray(keys))
    if len(keys) and ((found < 0).any() or (np.asarray(keys)[np.maximum(found, 0)] != np.asarray(keys)).any()):
        raise damaged(path, "the index does not find every id")


def not_a_store(path: Path, fmt: str) -> str:
    """Why ``path`` (no store manifest in it) is not a store of ``fmt``, and how to make one without packing over
    what is there (packing replaces its destination)."""
    name, pack = _kind(fmt)
    head = f"{path} is not a luab_fast {name}"
    if not path.exists():
        return f"{head}: it does not exist; create one with `{pack} SRC {path}`"
    if name == "store":  # byproducts: a .tar.gz / COCO .json release, or an extracted ImageNet-AB one
        release = path.name.endswith((".tar.gz", ".tgz", ".tar", ".json")) or (path / "train_xml").is_dir()
    else:  # label maps: a directory of <wnid>/<stem>.pt
        release = path.is_dir() and next(path.glob("*/*.pt"), None) is not None
    if release:
        what = "a release archive" if path.is_file() else "a release directory"
        return f"{head}: it is {what}, not packed yet; pack it into a new path with `{pack} {path} NEW.store`"
    what = "a file" if path.is_file() else f"a directory without a store manifest ({MANIFEST})"
    return f"{head}: it is {what}; pack a release into a new path with `{pack} SRC NEW.store`"


def verify_store(path: str | os.PathLike) -> list[str]:
    """Recomputes every array's checksum; returns the names that do not match (empty when intact)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        arrays = manifest["arrays"]
        bad = []
        for name, info in arrays.items():
            if not _ARRAY_NAME.match(name):
                raise StoreError(f"{path}: {MANIFEST} names an array {name!r}; re-pack the store")
            f = path / f"{name}.npy"
            if not f.is_file() or _digest_file(f) != info["blake2b"]:
                bad.append(name)
        return bad
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"{path / MANIFEST} is unreadable ({exc}); re-pack the store") from exc
