"""ImageNet-AB reader: the release's ``imagenet_ab_v1_0.tar.gz`` (or an extracted copy) → ``ImageNetSample``
per XML file, streamed, never extracted. Format: shared/docs/byproducts.md, section 1a.

    reader = read_imagenet_ab("imagenet_ab_v1_0.tar.gz", progress=True)
    for sample in reader:            # ImageNetSample, in archive order
        ...
    reader.problems                  # [ReadProblem(source=member, reason=...)] for files that were skipped
    reader.missing                   # ids of image_ids=... without an XML file

Sources: ``.tar.gz`` / ``.tgz`` / ``.tar`` (also bz2 / xz), or a directory in either layout,
``<root>/train_xml/<wnid>/<stem>.xml`` (release) or ``<root>/Annotations/CLS-LOC/train_enriched/<wnid>/
<stem>.xml`` (the official notebook), given as ``<root>`` or as the directory holding the wnid folders.
macOS ``._*`` files and non-``.xml`` members are skipped (counted in ``n_skipped``).

Engines: ``"cpp"`` parses batches of files in the compiled core (OpenMP, GIL released) while a thread
decompresses; a file the compiled parser refuses is re-parsed by the reference, so results never depend
on the engine. ``"python"`` uses the reference parser (xml.etree) alone. ``"auto"``: cpp when built.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

from .._cli import DataError, UsageError
from .._ext import HAS_EXT, require_ext
from .._store.index import file_stem
from ._imagenet_xml import assemble, parse_xml_reference
from ._pack_imagenet import sample_problem
from ._tar_stream import Prefetch, TarStreamError, iter_decompressed, iter_members
from .records import ImageNetSample, ReadProblem

__all__ = ["ImageNetABReader", "read_imagenet_ab", "parse_xml_reference"]

_LAYOUTS = ("train_xml", "Annotations/CLS-LOC/train_enriched", "CLS-LOC/train_enriched", "train_enriched")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Real ImageNet-AB files are a few KB (the largest few tens of KB): a member above this is not one, and is
# reported and skipped without being read (a 1 MB archive may hold a 1 GiB member of zeros).
MAX_MEMBER_BYTES = 16 << 20


image_stem = file_stem  # stem of an id, path or file name


def xml_root(src: Path) -> Path:
    """The directory holding the ``<wnid>/`` folders of an extracted release, in either layout."""
    for rel in _LAYOUTS:
        if (src / rel).is_dir():
            return src / rel
    return src


def _is_junk(base: str) -> bool:
    return base.startswith("._") or not base.endswith(".xml")


class ImageNetABReader:
    """Iterator of ``ImageNetSample`` over an ImageNet-AB archive or directory.

    After (or during) iteration: ``problems`` (``ReadProblem`` per unusable file, or one for the archive
    when its stream breaks: the files before the break are still yielded), ``missing`` (normalised ids
    from ``image_ids`` that have no XML; filled at the end), ``n_files`` (XML files parsed) and
    ``n_skipped`` (junk and non-XML members). ``strict=True`` raises ValueError at the first problem,
    naming the member. ``image_ids`` restricts the read to those images (any of the forms
    ``image_stem`` accepts); in a directory they are looked up by stem, no listing needed.

    Speed knobs (cpp engine): ``batch_size`` files per compiled call, ``n_threads`` OpenMP threads per
    call (1 by default: the parse already runs beside the decompressor and the Python assembly, and
    more threads only spin against them on a 2-core machine; 0 = all cores).
    """

    def __init__(self, src: str | os.PathLike, *, strict: bool = False, progress: bool = False,
                 image_ids: Iterable[str] | None = None, engine: str = "auto", batch_size: int = 1024,
                 n_threads: int = 1) -> None:
        if engine not in ("auto", "cpp", "python"):
            raise ValueError(f"engine must be 'auto', 'cpp' or 'python', got {engine!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.src = Path(src)
        if not self.src.exists():
            raise FileNotFoundError(f"ImageNet-AB source not found: {self.src}")
        self._parse_batch = None
        if engine == "cpp" or (engine == "auto" and HAS_EXT):
            self._parse_batch = require_ext("ImageNetABReader(engine='cpp')").byproducts.parse_imagenet_xml
        self.engine = "cpp" if self._parse_batch else "python"
        self.strict, self.progress = strict, progress
        self.batch_size, self.n_threads = batch_size, n_threads
        self.image_ids = None if image_ids is None else list(dict.fromkeys(image_stem(i) for i in image_ids))
        self.problems: list[ReadProblem] = []
        self.missing: list[str] = []
        self.n_files = 0
        self.n_skipped = 0
        self._fatal: ReadProblem | None = None
        self._it: Iterator[ImageNetSample] | None = None
        self._first_member: dict[str, str] = {}  # image id → the member that gave it (duplicates name both)

    def __iter__(self) -> ImageNetABReader:
        return self

    def __next__(self) -> ImageNetSample:
        if self._it is None:
            self._it = self._run()
        return next(self._it)

    def close(self) -> None:
        """Stops the background decompression when iteration is abandoned early."""
        if self._it is not None:
            self._it.close()

    def __enter__(self) -> ImageNetABReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- problems -------------------------------------------------------------------------------

    def _problem(self, source: str, reason: str) -> None:
        if self.strict:
            raise DataError(f"ImageNet-AB: {source}: {reason} (--strict: stopped at the first problem)")
        self.problems.append(ReadProblem(source=source, reason=reason))

    def _too_large(self, source: str, size: int) -> None:
        self._problem(source, f"{size:,} bytes, larger than any ImageNet-AB file (at most {MAX_MEMBER_BYTES:,}): "
                              f"skipped without reading it")

    # --- sources --------------------------------------------------------------------------------

    def _run(self) -> Iterator[ImageNetSample]:
        docs = self._dir_docs() if self.src.is_dir() else self._tar_docs()
        pool = ThreadPoolExecutor(1, thread_name_prefix="luab-parse") if self._parse_batch else None
        pending = None  # (batch, future): batch k parses (GIL released) while batch k-1 is assembled
        try:
            for batch in _batches(docs, self.batch_size):
                self.n_files += len(batch)
                fut = pool.submit(self._parse_batch, [d for _, d in batch], self.n_threads) if pool else None
                if pending is not None:
                    yield from self._finish(*pending)
                pending = (batch, fut)
            if pending is not None:
                yield from self._finish(*pending)
        finally:
            docs.close()  # stops the decompression thread now, not whenever the generator is collected
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if self._fatal is not None:
            self._problem(self._fatal.source, self._fatal.reason)

    def _tar_docs(self) -> Iterator[tuple[str, bytes]]:
        if not self.src.name.lower().endswith(_TAR_SUFFIXES):
            raise UsageError(f"ImageNet-AB source must be a directory or one of {', '.join(_TAR_SUFFIXES)}, "
                             f"got {self.src}")
        wanted = None if self.image_ids is None else set(self.image_ids)
        seen: set[str] = set()

        def want(name: str) -> bool:
            base = name.rsplit("/", 1)[-1]
            if _is_junk(base):
                self.n_skipped += 1
                return False
            if wanted is None:
                return True
            stem = base[:-4]
            if stem in wanted:
                seen.add(stem)
                return True
            return False

        bar = self._bar(total=self.src.stat().st_size, unit="B", unit_scale=True)
        pre = Prefetch(iter_decompressed(self.src))

        def chunks() -> Iterator[bytes]:
            done = 0
            for data, n_in in pre:
                if bar is not None:
                    bar.update(n_in - done)
                done = n_in
                yield data

        last = "(none)"
        try:
            for name, data in iter_members(chunks(), want, MAX_MEMBER_BYTES, self._too_large):
                last = name
                yield name, data
        except TarStreamError as e:
            self._fatal = ReadProblem(source=str(self.src), reason=f"{e}; stopped after member {last}")
        finally:
            pre.close()
            if bar is not None:
                bar.close()
        if wanted is not None:
            self.missing = [i for i in self.image_ids if i not in seen]

    def _dir_docs(self) -> Iterator[tuple[str, bytes]]:
        root = xml_root(self.src)
        if self.image_ids is not None:
            paths = []
            for stem in self.image_ids:
                p = root / stem.split("_", 1)[0] / f"{stem}.xml"
                if p.is_file():
                    paths.append(p)
                else:
                    self.missing.append(stem)
        else:
            paths = []
            for entry in sorted(os.scandir(root), key=lambda e: e.name):
                if entry.is_dir():
                    files = sorted(os.listdir(entry.path))
                    self.n_skipped += sum(map(_is_junk, files))
                    paths += [Path(entry.path, f) for f in files if not _is_junk(f)]
                elif entry.is_file():
                    if _is_junk(entry.name):
                        self.n_skipped += 1
                    else:
                        paths.append(Path(entry.path))
            if not paths:
                self._fatal = ReadProblem(source=str(self.src), reason=f"no ImageNet-AB XML files under {root}")
        bar = self._bar(total=len(paths), unit="file")
        try:
            for p in paths:
                try:
                    size = p.stat().st_size
                    if size > MAX_MEMBER_BYTES:
                        self._too_large(str(p), size)
                        continue
                    data = p.read_bytes()
                except OSError as e:
                    self._problem(str(p), f"cannot read: {e.strerror or e}")
                    continue
                if bar is not None:
                    bar.update()
                yield str(p), data
        finally:
            if bar is not None:
                bar.close()

    def _bar(self, **kw):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(desc=f"ImageNet-AB {self.src.name}", **kw)

    # --- parsing --------------------------------------------------------------------------------

    def _finish(self, batch: list[tuple[str, bytes]], fut: Future | None) -> Iterator[ImageNetSample]:
        results = assemble(fut.result(), [n for n, _ in batch]) if fut is not None else [None] * len(batch)
        for (name, data), r in zip(batch, results):
            if r is None:  # python engine, or a file the compiled parser refused: the reference decides
                try:
                    r = parse_xml_reference(data, name)
                except ValueError as e:
                    r = e
            if not isinstance(r, ValueError):
                reason = sample_problem(r)
                if reason is None and r.image_id in self._first_member:
                    reason = (f"duplicate image id {r.image_id!r}, also in {self._first_member[r.image_id]}: skipped "
                              f"(the first wins)")
                if reason is not None:
                    r = ValueError(reason)
            if isinstance(r, ValueError):
                self._problem(name, str(r))
            else:
                self._first_member[r.image_id] = name
                yield r


def _batches(docs: Iterator[tuple[str, bytes]], size: int) -> Iterator[list[tuple[str, bytes]]]:
    batch: list[tuple[str, bytes]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_imagenet_ab(src: str | os.PathLike, *, strict: bool = False, progress: bool = False,
                     image_ids: Iterable[str] | None = None, engine: str = "auto") -> ImageNetABReader:
    """Iterates the ``ImageNetSample`` of an ImageNet-AB ``.tar.gz`` / ``.tar`` or directory; the returned
    reader also carries ``problems``, ``missing``, ``n_files`` and ``n_skipped`` (see ImageNetABReader)."""
    return ImageNetABReader(src, strict=strict, progress=progress, image_ids=image_ids, engine=engine)
