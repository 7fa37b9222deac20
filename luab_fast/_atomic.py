"""Writes that never leave a half-written file or a stray temporary behind.

Every file luab_fast writes goes through ``atomic_path``: the content is written to a unique temporary name in
the destination's own folder (so the final rename is atomic on one filesystem), given the mode any other new
file would get under the process's umask (``mkstemp`` makes 0600), and renamed over the destination only when
complete. A failure removes the temporary. A process killed mid-write (SIGKILL, power cut) cannot clean up, so
the temporary's name carries the writer's pid and the next write to the same destination removes temporaries
whose writer is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

_TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set and restore at once
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The permission bits ``open()`` / ``mkdir()`` would give a new file / folder under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def temp_prefix(path: Path) -> str:
    """``.<name>.<pid>.``: hidden, next to ``path``, and naming the process that writes it."""
    return f".{path.name}.{os.getpid()}."


def sweep_stale(path: Path) -> list[Path]:
    """Removes temporaries of ``path`` left by writers that no longer run (killed mid-write); returns them."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\..*{re.escape(_TMP_SUFFIX)}(\.[^.]*)?$")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for sib in siblings:
        m = pattern.match(sib.name)
        if m and not _pid_alive(int(m.group(1))):
            try:
                if sib.is_dir() and not sib.is_symlink():
                    import shutil

                    shutil.rmtree(sib, ignore_errors=True)
                else:
                    sib.unlink()
                removed.append(sib)
            except OSError:
                pass
    return removed


def check_destination(path, what: str) -> Path:
    """``path`` as a Path whose folder exists and is a folder, and which is not itself a folder; else a
    ValueError naming ``what`` (the argument, e.g. ``--out``)."""
    path = Path(path)
    if str(path) == "" or path.name in ("", ".", ".."):
        raise ValueError(f"{what}: expected a file name, got {str(path)!r}")
    parent = path.parent
    if not parent.exists():
        raise ValueError(f"{what} {path}: its folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise ValueError(f"{what} {path}: {parent} is not a folder")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name inside it")
    return path


@contextlib.contextmanager
def atomic_path(path, *, keep_suffix: bool = True, fsync: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write to; on a clean exit it is renamed onto ``path`` with the
    umask's mode, on an exception it is removed. ``keep_suffix`` ends the temporary with ``path``'s suffix (for
    writers that choose a format by it, e.g. matplotlib). ``fsync`` flushes the file and the rename to disk."""
    path = Path(path)
    sweep_stale(path)
    suffix = _TMP_SUFFIX + (path.suffix if keep_suffix else "")
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (str(tmp), tmp):
            exc.filename = str(path)  # the user knows the output, not our hidden temporary
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure(fig, path, **savefig_kwargs) -> Path:
    """``fig.savefig`` through a temporary: a failed or killed save never leaves a torn PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    return Path(path)


def make_temp_dir(dst: Path) -> Path:
    """A hidden temporary folder beside ``dst`` (same filesystem: renamed onto it when complete), named with the
    writer's pid so ``sweep_stale(dst)`` removes it if the writer dies; mode per the umask."""
    dst = Path(dst)
    sweep_stale(dst)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dst), suffix=_TMP_SUFFIX, dir=dst.parent))
    os.chmod(tmp, default_mode(directory=True))
    return tmp
