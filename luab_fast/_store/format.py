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
from .errors import StoreError, damaged

MANIFEST = "manifest.json"
_CHUNK = 8 << 20
_ARRAY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # an array's file is <name>.npy inside the store


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
    together: :func:`.layout.check_layout`."""
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
